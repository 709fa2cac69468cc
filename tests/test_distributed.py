"""Several processes (torch.distributed, torchrun): sharding that neither repeats nor drops an input,
summed confusion matrices, and the smoke recipe trained, evaluated and predicted by two CPU processes
over gloo.

The sharding and summary logic is tested in one process (fast); the ``slow`` tests start real
``torchrun --nproc-per-node 2`` runs on CamVid (skipped without ``../shared/data/camvid``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from pixelwise.data import load_dataset_spec
from pixelwise.engine import distributed as D
from pixelwise.engine import predict as predict_mod
from pixelwise.engine.checkpoint import ModelMeta, build_model
from pixelwise.engine.distributed import DistContext, shard_indices
from pixelwise.engine.evaluate import eval_loader
from pixelwise.engine.predictor import Segmenter
from pixelwise.errors import PixelwiseError
from pixelwise.metrics import ConfusionMatrix

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid not present")


# --- sharding: every position exactly once ------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 101, 233])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_shards_cover_every_position_exactly_once(n: int, world: int) -> None:
    shards = [shard_indices(n, r, world) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))  # no drops
    assert len(flat) == len(set(flat))  # no duplicates
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_distributed_sampler_pads_where_shards_do_not() -> None:
    """Why evaluation shards by position: DistributedSampler repeats samples to even out ranks."""
    data = list(range(5))
    padded = [i for r in range(2) for i in DistributedSampler(data, 2, r, shuffle=False)]
    assert len(padded) == 6 and len(set(padded)) == 5  # one image would be scored twice
    ours = [i for r in range(2) for i in shard_indices(5, r, 2)]
    assert sorted(ours) == data


@pytest.mark.parametrize(("rank", "world"), [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank_is_an_error(rank: int, world: int) -> None:
    with pytest.raises(PixelwiseError, match="rank"):
        shard_indices(4, rank, world)


def test_shard_of_items_follows_positions() -> None:
    items = list("abcdefg")
    assert D.shard(items, DistContext(1, 3, 1, "gloo")) == ["b", "e"]
    assert D.shard(items, DistContext()) == items


def _mixed_size_dataset(synth) -> Path:  # noqa: ANN001
    """Seven images in two sizes (so same-size batching matters); returns the dataset folder."""
    rng = np.random.default_rng(1)
    masks = {
        f"{i}": rng.integers(0, 3, (16, 16) if i % 3 else (12, 20), dtype=np.uint8)
        for i in range(7)
    }
    return synth.paired(masks, folder="ds")


def test_eval_shards_are_whole_single_process_batches(synth) -> None:  # noqa: ANN001
    spec = load_dataset_spec(_mixed_size_dataset(synth))
    split = next(iter(spec.splits))
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def batches(shard: DistContext | None) -> list[tuple[int, ...]]:
        loader = eval_loader(spec, split, mean, std, batch_size=2, num_workers=0, shard=shard)
        assert len(loader.dataset) == 7  # the whole split, whatever the shard
        return [tuple(b) for b in loader.batch_sampler]

    single = batches(None)
    for world in (2, 3, 5, 8):
        parts = [batches(DistContext(r, world, r, "gloo")) for r in range(world)]
        flat = [b for p in parts for b in p]
        assert sorted(flat) == sorted(single)  # the same batches: identical logits and matrix
        images = [i for b in flat for i in b]
        assert sorted(images) == list(range(7))


# --- one process: nothing changes -----------------------------------------------------------------


def test_no_torchrun_means_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = D.init_distributed("cpu")
    assert ctx == DistContext() and not ctx.enabled and ctx.is_main
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc-per-node 1: no process group
    assert D.init_distributed("cpu") == DistContext()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    ("rank", "world", "needle"), [("x", "2", "RANK='x'"), ("3", "2", "RANK=3, WORLD_SIZE=2")]
)
def test_bad_torchrun_environment_is_one_line(
    monkeypatch: pytest.MonkeyPatch, rank: str, world: str, needle: str
) -> None:
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(PixelwiseError, match=needle.replace("[", r"\[")):
        D.init_distributed("cpu")


def test_single_process_helpers_are_identities() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    assert D.reduce_confusion(cm) is cm
    t = torch.arange(4)
    assert D.all_reduce_sum(t) is t
    assert D.all_gather_objects({"a": 1}) == [{"a": 1}]
    D.barrier()


def test_lr_scaling_rules() -> None:
    assert D.lr_multiplier("none", 8) == 1.0
    assert D.lr_multiplier("linear", 8) == 8.0
    assert D.lr_multiplier("linear", 1) == 1.0
    with pytest.raises(PixelwiseError, match="lr_scaling"):
        D.lr_multiplier("sqrt", 4)


def test_sync_batchnorm_falls_back_to_batchnorm(caplog: pytest.LogCaptureFixture) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    cpu = torch.device("cpu")
    same, synced = D.sync_batchnorm(model, True, DistContext(), cpu)  # one process
    assert same is model and not synced
    assert isinstance(model[1], torch.nn.BatchNorm2d)
    with caplog.at_level(logging.WARNING):
        same, synced = D.sync_batchnorm(model, True, DistContext(0, 2, 0, "gloo"), cpu)
    assert not synced and isinstance(model[1], torch.nn.BatchNorm2d)
    assert "SyncBatchNorm needs GPUs" in caplog.text


def test_local_device_is_one_gpu_per_process() -> None:
    assert D.local_device("cpu", DistContext(1, 2, 1, "gloo")) == torch.device("cpu")
    if torch.cuda.is_available():
        assert D.local_device("cuda", DistContext(1, 2, 1, "nccl")) == torch.device("cuda", 1)


# --- sharded prediction, one rank at a time in this process ---------------------------------------


def _tiny_segmenter() -> Segmenter:
    torch.manual_seed(0)
    meta = ModelMeta(
        arch="unet",
        num_classes=3,
        in_channels=3,
        class_names=["a", "b", "c"],
        colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        model_kwargs={"base_channels": 4, "depth": 2},
    )
    return Segmenter(build_model(meta), meta, device="cpu")


def test_each_rank_writes_its_own_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(src / f"{i}.png")
    (src / "broken.png").write_bytes(b"not an image")
    seg, out, world = _tiny_segmenter(), tmp_path / "out", 3
    written: list[list[Path]] = []
    failed: list[list[tuple[str, str]]] = []
    for rank in range(world):
        ctx = DistContext(rank, world, rank, "gloo")
        monkeypatch.setattr(predict_mod, "current_context", lambda ctx=ctx: ctx)
        monkeypatch.setattr(predict_mod, "all_gather_objects", lambda obj: [obj])
        s = predict_mod.predict_files(
            seg, [str(src), str(tmp_path / "missing.png")], out, num_workers=0, progress=False
        )
        written.append(s.written)
        failed.append(s.failed)
    flat = [p.name for w in written for p in w]
    assert sorted(flat) == [f"{i}.png" for i in range(7)]  # every output exactly once
    assert sorted(p.name for p in out.glob("[0-9].png")) == sorted(flat)
    reasons = [f[0] for fs in failed for f in fs]
    # the missing input is reported by rank 0 only; the broken one by the rank that owns it
    assert sorted(Path(r).name for r in reasons) == ["broken.png", "missing.png"]
    assert any(Path(f[0]).name == "missing.png" for f in failed[0])


def test_gathered_summary_merges_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = [
        predict_mod.PredictSummary(written=[Path("a.png")], seconds=2.0),
        predict_mod.PredictSummary(written=[Path("b.png")], failed=[("c", "bad")], seconds=3.0),
    ]
    monkeypatch.setattr(predict_mod, "all_gather_objects", lambda obj: parts)
    s = predict_mod.gathered(parts[0], DistContext(0, 2, 0, "gloo"))
    assert [p.name for p in s.written] == ["a.png", "b.png"]
    assert s.failed == [("c", "bad")] and s.seconds == 3.0
    assert s.images_per_second == pytest.approx(2 / 3)


# --- two real processes (torchrun, gloo) on the smoke recipe --------------------------------------


def _env() -> dict[str, str]:
    # one thread per process, both runs alike: the comparison is of sharding, not of BLAS threads
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _pixelwise(*args: str, procs: int = 1) -> subprocess.CompletedProcess:
    launcher = [*TORCHRUN, str(procs), "-m"] if procs > 1 else [sys.executable, "-m"]
    return subprocess.run(
        [*launcher, "pixelwise", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1800,  # a loaded 2-core machine: process start-up alone can take minutes
    )


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The smoke recipe trained by two processes (once for the module)."""
    if not CAMVID.is_dir():
        pytest.skip("../shared/data/camvid not present")
    out = tmp_path_factory.mktemp("ddp") / "run"
    r = _pixelwise("train", "configs/smoke.yaml", "--out", str(out), "--quiet", procs=2)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out, r


@pytest.mark.slow
@needs_camvid
def test_torchrun_trains_with_one_writer(ddp_run) -> None:  # noqa: ANN001
    out, r = ddp_run
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "best.ckpt",
        "config.yaml",
        "curves.png",
        "last.ckpt",
        "manifest.json",
        "metrics.csv",
    ]  # one checkpoint of each kind, one log, no per-rank copies or temporary files
    assert r.stdout.count("trained 1 epoch(s)") == 1  # rank 0 alone reports
    logged = r.stdout + r.stderr
    assert logged.count("INFO epoch 1/2") == 1  # rank 0 alone logs
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,6,")  # smoke: max_steps 6
    m = json.loads((out / "manifest.json").read_text())
    assert m["world_size"] == 2 and m["distributed_backend"] == "gloo"
    assert m["per_process_batch_size"] == 4 and m["effective_batch_size"] == 8
    assert m["lr_scaling"] == "none" and m["lr"] == pytest.approx(0.005)
    assert m["sync_batchnorm"] is False


@pytest.mark.slow
@needs_camvid
def test_torchrun_resumes_the_same_checkpoint(ddp_run, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    shutil.copytree(ddp_run[0], out)
    r = _pixelwise(
        "train", "configs/smoke.yaml", "--out", str(out), "--quiet", "--resume",
        "--set", "train.max_steps=8", "--set", "train.lr_scaling=linear", "--set", "data.val_split=null",
        "--set", "train.grad_accum=2",  # DDP's no_sync on the micro-batch between steps
        procs=2,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["1", "6"], ["2", "8"]]
    m = json.loads((out / "manifest.json").read_text())
    assert m["resumed"] is True and m["lr"] == pytest.approx(0.01)  # linear: 0.005 × 2
    assert m["effective_batch_size"] == 16  # 4 per process × 2 accumulated × 2 processes
    last = torch.load(out / "last.ckpt", weights_only=True)
    assert last["train_state"]["world_size"] == 2 and last["train_state"]["step"] == 8
    assert last["train_state"]["scheduler"]["base_lrs"] == pytest.approx([0.01, 0.01])


@pytest.mark.slow
@needs_camvid
def test_evaluation_matrix_identical_with_one_and_two_processes(
    ddp_run,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    ckpt = ddp_run[0] / "best.ckpt"
    reports = {}
    for procs in (1, 2):
        rep = tmp_path / f"eval{procs}.json"
        r = _pixelwise(
            "evaluate", "--model", str(ckpt), "--data", "configs/data/camvid.yaml",
            "--split", "val", "--out", str(rep), "--workers", "0", "--quiet",
            procs=procs,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count("mIoU") == 1  # one report, from rank 0
        reports[procs] = json.loads(rep.read_text())
    one, two = reports[1], reports[2]
    assert one["num_images"] == two["num_images"] == 101  # odd: the shards are uneven
    assert np.array(one["confusion_matrix"]).sum() > 0
    assert one["confusion_matrix"] == two["confusion_matrix"]  # exactly
    assert one["miou"] == two["miou"]


@pytest.mark.slow
@needs_camvid
def test_sharded_prediction_writes_every_output_once(
    ddp_run,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    images = tmp_path / "in"
    images.mkdir()
    src = sorted((CAMVID / "test").iterdir())[:5]  # odd: one process gets one more
    for s in src:
        shutil.copy(s, images / s.name)
    ckpt = str(ddp_run[0] / "best.ckpt")
    outs = {}
    for procs in (1, 2):
        outs[procs] = tmp_path / f"pred{procs}"
        r = _pixelwise(
            "predict", str(images), "--model", ckpt, "--out", str(outs[procs]),
            "--no-overlay", "--batch-size", "1", "--workers", "0", "--quiet",
            procs=procs,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert r.stdout.count("wrote 5 mask(s)") == 1  # the summary of both ranks, printed once
    names = sorted(p.name for p in outs[2].iterdir())
    assert names == sorted(s.name for s in src)  # every output, nothing else
    for s in src:
        a = np.array(Image.open(outs[1] / s.name))
        b = np.array(Image.open(outs[2] / s.name))
        assert np.array_equal(a, b), s.name
