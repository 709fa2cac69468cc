"""Nothing lost, nothing trusted blindly: interrupted training (SIGKILL at chosen points, Ctrl-C, a
full disk), untrusted model files, determinism and numerical health. See docs/reliability.md."""

from __future__ import annotations

import errno
import importlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import toy_dataset as _toy_dataset
from PIL import Image

import pixelwise.engine.checkpoint as checkpoint_mod
from pixelwise.cli import main
from pixelwise.config import RunConfig
from pixelwise.engine import Segmenter, evaluate, load_checkpoint, train
from pixelwise.engine.checkpoint import FORMAT, ModelMeta, save_checkpoint, sha256_file
from pixelwise.engine.guard import TrainingInterrupted
from pixelwise.errors import PixelwiseError
from pixelwise.registry import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

train_mod = importlib.import_module("pixelwise.engine.train")  # the module, not the function

ROOT = Path(__file__).resolve().parents[1]


def _raw_cfg(dataset: Path, **train_kw: object) -> dict:
    return {
        "data": {"dataset": str(dataset), "train_split": "all", "val_split": "all"},
        "model": {"name": "unet", "params": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [24, 24], "scale": [0.75, 1.25]},
        "optim": {"lr": 0.01},
        "schedule": {"name": "poly", "warmup_iters": 2},
        "train": {
            "epochs": 3,
            "batch_size": 2,
            "num_workers": 0,
            "amp": "off",
            "seed": 3,
            "deterministic": True,
            **train_kw,
        },
    }


def _cfg(dataset: Path, **train_kw: object) -> RunConfig:
    return RunConfig(**_raw_cfg(dataset, **train_kw))


@pytest.fixture(autouse=True)
def _restore_determinism():
    """``--deterministic`` switches a process-wide flag: put it back after each test."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bit for bit: tolerance 0


def _metrics(run: Path) -> list[list[str]]:
    """metrics.csv without its timing columns."""
    rows = (run / "metrics.csv").read_text().splitlines()
    return [r.split(",")[:7] for r in rows]


# ---- Ctrl-C ----------------------------------------------------------------------------------


def _sigint_at(monkeypatch: pytest.MonkeyPatch, at_step: int) -> None:
    """Send this process SIGINT when the schedule reaches ``at_step`` (inside an epoch)."""
    real = train_mod.lr_factor
    sent = []

    def lr_factor(step: int, total: int, cfg: RunConfig) -> float:
        if step == at_step and not sent:  # called once per parameter group: signal once
            sent.append(step)
            os.kill(os.getpid(), signal.SIGINT)
        return real(step, total, cfg)

    monkeypatch.setattr(train_mod, "lr_factor", lr_factor)


def test_ctrl_c_saves_inside_the_epoch_and_resume_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _toy_dataset(tmp_path / "data")
    cfg = _cfg(data)
    train(cfg, tmp_path / "full", progress=False)

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in the background
    _sigint_at(monkeypatch, 6)  # epoch 2 of 3 (4 steps per epoch), second step
    with pytest.raises(TrainingInterrupted, match="epoch 2, step 6") as info:
        train(cfg, tmp_path / "split", progress=False)
    assert "--resume" in str(info.value) and "\n" not in str(info.value)
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    st = load_checkpoint(tmp_path / "split" / "last.ckpt")["train_state"]
    assert (st["epoch"], st["step"], st["batch"]) == (1, 6, 2)
    monkeypatch.undo()
    resumed = train(cfg, tmp_path / "split", resume=True, progress=False)
    assert resumed.steps == 12
    _same_weights(tmp_path / "full" / "last.ckpt", tmp_path / "split" / "last.ckpt")
    _same_weights(tmp_path / "full" / "best.ckpt", tmp_path / "split" / "best.ckpt")
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "split")


def test_ctrl_c_through_the_cli_exits_130_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _toy_dataset(tmp_path / "data")
    recipe = tmp_path / "run.yaml"
    recipe.write_text(json.dumps(_raw_cfg(data, deterministic=False)))
    _sigint_at(monkeypatch, 3)
    with pytest.raises(SystemExit) as info:
        main(["train", str(recipe), "--out", str(tmp_path / "run"), "--quiet"])
    assert info.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted at epoch 1, step 3"), err
    assert load_checkpoint(tmp_path / "run" / "last.ckpt")["train_state"]["batch"] == 3


# ---- a full disk -------------------------------------------------------------------------------


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _toy_dataset(tmp_path / "data")
    recipe = tmp_path / "run.yaml"
    recipe.write_text(json.dumps(_raw_cfg(data)))
    real = checkpoint_mod.atomic_path
    writes = {"last.ckpt": 0}

    import contextlib

    @contextlib.contextmanager
    def full_disk(path):  # noqa: ANN001, ANN202
        with real(path) as tmp:
            if Path(path).name == "last.ckpt":
                writes["last.ckpt"] += 1
                if writes["last.ckpt"] == 2:  # epoch 2's checkpoint: half written, then ENOSPC
                    tmp.write_bytes(b"\0" * 100)
                    raise OSError(errno.ENOSPC, "No space left on device")
            yield tmp

    monkeypatch.setattr(checkpoint_mod, "atomic_path", full_disk)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["train", str(recipe), "--out", str(out), "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "last.ckpt: cannot write the checkpoint (No space left on device)" in err[0]
    assert "the previous checkpoint is intact" in err[0] and "Traceback" not in err[0]
    assert sorted(p.name for p in out.glob(".*")) == []  # no temporary file left
    ckpt = load_checkpoint(out / "last.ckpt")  # epoch 1's, whole, and its checksum still holds
    assert ckpt["train_state"]["epoch"] == 1
    monkeypatch.undo()
    resumed = train(_cfg(data), out, resume=True, progress=False)
    assert resumed.steps == 12


# ---- numerical health --------------------------------------------------------------------------


def test_nan_loss_stops_naming_step_and_files_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _toy_dataset(tmp_path / "data")
    real_build = train_mod.build_loss

    def poisoned(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        loss = real_build(*args, **kwargs)
        calls = {"n": 0}

        def forward(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            value = type(loss).forward(loss, logits, target)
            return value * float("nan") if calls["n"] == 6 else value  # epoch 2, second batch

        loss.forward = forward
        return loss

    monkeypatch.setattr(train_mod, "build_loss", poisoned)
    recipe = tmp_path / "run.yaml"
    recipe.write_text(json.dumps(_raw_cfg(data)))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["train", str(recipe), "--out", str(out), "--quiet"])
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: loss became nan at epoch 2, step 5")
    assert ".png" in line and f"last good checkpoint: {out / 'last.ckpt'}" in line
    assert load_checkpoint(out / "last.ckpt")["train_state"]["epoch"] == 1


def test_a_huge_learning_rate_is_caught(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    raw = _raw_cfg(data, epochs=2)
    raw["optim"] = {"lr": 1e30}
    with pytest.raises(PixelwiseError, match=r"loss became (nan|inf).*batch: im\d\.png"):
        train(RunConfig(**raw), tmp_path / "run", progress=False)


# ---- determinism -------------------------------------------------------------------------------


def test_deterministic_training_is_bit_identical_with_workers(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    cfg = _cfg(data, epochs=2, num_workers=2)
    train(cfg, tmp_path / "a", progress=False)
    assert not torch.are_deterministic_algorithms_enabled()  # only while training ran
    train(cfg, tmp_path / "b", progress=False)
    _same_weights(tmp_path / "a" / "last.ckpt", tmp_path / "b" / "last.ckpt")
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["deterministic"] is True


def test_evaluation_is_identical_run_to_run(tmp_path: Path) -> None:
    from pixelwise.data import load_dataset_spec

    data = _toy_dataset(tmp_path / "data")
    train(_cfg(data, epochs=1), tmp_path / "run", progress=False)
    seg = Segmenter.from_checkpoint(tmp_path / "run" / "best.ckpt", device="cpu")
    spec = load_dataset_spec(data)
    a = evaluate(seg, spec, "all", batch_size=3, num_workers=0, progress=False)
    b = evaluate(seg, spec, "all", batch_size=3, num_workers=2, progress=False)
    assert torch.equal(a.confusion.matrix, b.confusion.matrix)


def test_seeded_workers_get_repeatable_numpy_seeds() -> None:
    from torch.utils.data import DataLoader, Dataset

    from pixelwise.engine.guard import seed_worker

    class Draws(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> float:
            return float(np.random.random())

    def draws() -> list[float]:
        loader = DataLoader(
            Draws(),
            num_workers=2,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(5),
        )
        return [float(x) for x in loader]

    first = draws()
    assert first == draws() and len(set(first)) == 4  # repeatable, and workers differ


# ---- untrusted model files -----------------------------------------------------------------------


class _Evil:
    """Unpickling this calls ``open(marker, "w")``: the file appears if a loader runs it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth"])
def test_pickle_payload_is_refused_everywhere_and_runs_nothing(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / f"evil{suffix}"
    torch.save({"format": FORMAT, "meta": {}, "model": {"w": _Evil(marker)}}, evil)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with pytest.raises(PixelwiseError, match="refused"):
        load_checkpoint(evil)
    with pytest.raises(PixelwiseError, match="refused"):
        Segmenter.from_checkpoint(evil, device="cpu")
    for cmd in (
        ["predict", str(image), "--out", str(tmp_path / "out"), "--model", str(evil), "--quiet"],
        ["export", "--model", str(evil), "--out", str(tmp_path / "m.onnx")],
        ["bundle", "--model", str(evil), "--name", "evil", "--out", str(tmp_path / "b")],
    ):
        with pytest.raises(SystemExit) as info:
            main(cmd)
        assert info.value.code == 2, cmd
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error: ") and str(evil) in line and "refused" in line, line
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    "data",
    [b"", b"not a model", bytes(range(256)) * 8, pickle.dumps({"a": 1})],
    ids=["empty", "text", "noise", "plain-pickle"],
)
def test_garbage_onnx_and_safetensors_are_refused_in_one_line(tmp_path: Path, data: bytes) -> None:
    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(data)
    with pytest.raises(PixelwiseError) as info:
        Segmenter.from_checkpoint(onnx, device="cpu")
    assert str(onnx) in str(info.value) and "\n" not in str(info.value)
    # a bundle: its description names the weights; garbage weights (with their own checksum, so
    # that the checksum does not catch them first) must still give one line
    meta = _tiny_meta()
    (tmp_path / "m.safetensors").write_bytes(data)
    (tmp_path / "m.json").write_text(
        json.dumps(
            {
                "format": "pixelwise.bundle/1",
                "name": "m",
                "weights": "m.safetensors",
                "sha256": sha256_file(tmp_path / "m.safetensors"),
                "meta": meta.to_dict(),
                "dtype": "float32",
                "input_size": [32, 32],
            }
        )
    )
    with pytest.raises(PixelwiseError) as info:
        Segmenter.from_checkpoint(tmp_path / "m.json", device="cpu")
    assert "m.safetensors" in str(info.value) and "\n" not in str(info.value)


def _tiny_meta() -> ModelMeta:
    """The description of a 2-class U-Net at width 4, depth 2 (the models these tests load)."""
    return ModelMeta(
        arch="unet",
        num_classes=2,
        in_channels=3,
        class_names=["a", "b"],
        colors=[[0, 0, 0], [255, 255, 255]],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        model_kwargs={"base_channels": 4, "depth": 2},
    )


def _tiny_checkpoint(path: Path) -> None:
    meta = _tiny_meta()
    model = create_model("unet", num_classes=2, in_channels=3, base_channels=4, depth=2)
    save_checkpoint(
        path,
        {"meta": meta.to_dict(), "model": model.state_dict()},
        manifest=path.parent / "manifest.json",
    )


def test_checksums_are_recorded_and_checked(tmp_path: Path) -> None:
    ckpt = tmp_path / "best.ckpt"
    _tiny_checkpoint(ckpt)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["checksums"]["best.ckpt"]["sha256"] == sha256_file(ckpt)
    load_checkpoint(ckpt)
    # a different, valid checkpoint put in its place: refused by checksum
    _tiny_checkpoint(tmp_path / "other" / "best.ckpt")
    os.replace(tmp_path / "other" / "best.ckpt", ckpt)
    with pytest.raises(PixelwiseError, match="checksum mismatch") as info:
        load_checkpoint(ckpt)
    assert str(ckpt) in str(info.value) and "manifest.json" in str(info.value)
    # a flipped byte: refused before unpickling anything
    _tiny_checkpoint(ckpt)
    raw = bytearray(ckpt.read_bytes())
    raw[len(raw) // 2] ^= 1
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(PixelwiseError, match="checksum mismatch"):
        load_checkpoint(ckpt)
    # no manifest, or a manifest without an entry: nothing to check against
    (tmp_path / "manifest.json").unlink()
    _tiny_checkpoint(tmp_path / "plain" / "x.ckpt")
    (tmp_path / "plain" / "manifest.json").unlink()
    load_checkpoint(tmp_path / "plain" / "x.ckpt")


def test_training_records_checksums_and_resume_keeps_them(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    out = tmp_path / "run"
    train(_cfg(data, epochs=1), out, progress=False)
    sums = json.loads((out / "manifest.json").read_text())["checksums"]
    assert sums["last.ckpt"]["sha256"] == sha256_file(out / "last.ckpt")
    assert sums["best.ckpt"]["sha256"] == sha256_file(out / "best.ckpt")
    train(_cfg(data, epochs=2), out, resume=True, progress=False)
    sums2 = json.loads((out / "manifest.json").read_text())["checksums"]
    assert sums2["last.ckpt"]["sha256"] == sha256_file(out / "last.ckpt")
    assert sums2["last.ckpt"]["previous"] == sums["last.ckpt"]["sha256"]


def test_bundle_weights_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    from pixelwise.engine.bundle import write_bundle
    from pixelwise.engine.loading import load_model

    ckpt = tmp_path / "m.ckpt"
    _tiny_checkpoint(ckpt)
    path = write_bundle(
        load_model(ckpt), tmp_path / "b", "tiny", dtype="float32", input_size=(32, 32)
    )
    Segmenter.from_checkpoint(path, device="cpu")
    weights = tmp_path / "b" / "tiny.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    with pytest.raises(PixelwiseError, match="tiny.safetensors") as info:
        Segmenter.from_checkpoint(path, device="cpu")
    assert "sha256" in str(info.value).lower() or "checksum" in str(info.value).lower()


# ---- SIGKILL at chosen points, then --resume ---------------------------------------------------

# The child runs ``pixelwise train`` with two hooks: it prints READY and waits to be killed when the
# schedule reaches a chosen optimizer step (``step N``), or when the Nth write of a checkpoint has
# put its bytes in the temporary file (and recorded its checksum) but not yet renamed it
# (``write NAME:N``). The parent SIGKILLs it on READY.
_DRIVER = textwrap.dedent(
    """
    import contextlib, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    import pixelwise.engine.checkpoint as C
    import importlib
    T = importlib.import_module("pixelwise.engine.train")
    from pixelwise.cli import main

    kind, target = sys.argv[1], sys.argv[2]
    real_lr, real_atomic, counts = T.lr_factor, C.atomic_path, {}

    def wait():  # lr_factor runs once per parameter group: the first call waits for the kill
        print("READY", flush=True)
        time.sleep(600)

    def lr_factor(step, total, cfg):
        if kind == "step" and step == int(target):
            wait()
        return real_lr(step, total, cfg)

    @contextlib.contextmanager
    def atomic_path(path):
        with real_atomic(path) as tmp:
            yield tmp
            name = Path(path).name
            counts[name] = counts.get(name, 0) + 1
            if kind == "write" and f"{name}:{counts[name]}" == target:
                wait()

    T.lr_factor, C.atomic_path = lr_factor, atomic_path
    main(sys.argv[3:])
    """
)


def _run_child(driver: Path, recipe: Path, out: Path, kill: tuple[str, str] | None) -> str:
    """Run training (resuming when ``out`` holds a checkpoint); SIGKILL it at ``kill``. Returns
    how it ended: "killed" or "finished"."""
    args = ["train", str(recipe), "--out", str(out), "--quiet"]
    if (out / "last.ckpt").exists():
        args.append("--resume")
    kind, target = kill or ("none", "-")
    proc = subprocess.Popen(
        [sys.executable, str(driver), kind, target, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return "finished"
    deadline = time.monotonic() + 300
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "READY" or not line:
            break
    assert line.strip() == "READY", f"the child ended before {kill}: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return "killed"


# 3 epochs × 4 steps. Kill points in the order a run meets them; the steps are drawn at random
# (seeded) inside each epoch, and two kills land inside checkpoint writes.
_rng = random.Random(2024)
KILL_POINTS = [
    ("step", str(_rng.randint(1, 3))),  # epoch 1: no checkpoint yet, the run restarts
    ("write", "last.ckpt:1"),  # epoch 1's checkpoint half done: still none, restart again
    ("step", str(_rng.randint(6, 8))),  # epoch 2, after a resume
    ("write", "last.ckpt:1"),  # epoch 2's checkpoint: manifest updated, file not yet renamed
    ("step", str(_rng.randint(10, 12))),  # epoch 3
]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    recipe = tmp_path / "run.yaml"
    recipe.write_text(json.dumps(_raw_cfg(data)))
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    _run_child(driver, recipe, tmp_path / "full", None)
    out = tmp_path / "killed"
    survived = 0
    for kill in KILL_POINTS:
        assert _run_child(driver, recipe, out, kill) == "killed"
        if (out / "last.ckpt").exists():  # whatever the moment, the checkpoint on disk loads
            load_checkpoint(out / "last.ckpt")
        survived += 1
    _run_child(driver, recipe, out, None)
    assert survived == len(KILL_POINTS)
    assert not list(out.glob(".*.tmp"))
    _same_weights(tmp_path / "full" / "last.ckpt", out / "last.ckpt")
    _same_weights(tmp_path / "full" / "best.ckpt", out / "best.ckpt")
    assert _metrics(tmp_path / "full") == _metrics(out)


def test_an_operation_without_a_deterministic_implementation_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CUDA, bilinear upsampling's and adaptive pooling's backward passes have no deterministic
    kernels; simulated here (this machine has no GPU) by the error PyTorch raises."""

    def failing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        assert torch.are_deterministic_algorithms_enabled()
        raise RuntimeError(
            "upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, "
            "but you set 'torch.use_deterministic_algorithms(True)'. ..."
        )

    monkeypatch.setattr(train_mod, "_train", failing)
    with pytest.raises(PixelwiseError, match="upsample_bilinear2d_backward_out_cuda") as info:
        train(_cfg(tmp_path), tmp_path / "run", progress=False)
    assert "without --deterministic" in str(info.value) and "\n" not in str(info.value)
    assert not torch.are_deterministic_algorithms_enabled()
