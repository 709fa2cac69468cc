"""Model bundles (NAME.safetensors + NAME.json): round trips in float32 (exact) and float16 (within
rounding, same labels), loading by name (files win, unknown names list the bundled ones,
PIXELWISE_PRETRAINED_DIR), safetensors only, --model defaulting to the bundled ``camvid``, and the
``pixelwise bundle`` command."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import pixelwise
from pixelwise import cli
from pixelwise.engine import Segmenter
from pixelwise.engine.bundle import bundle_info, read_bundle, write_bundle
from pixelwise.engine.checkpoint import ModelMeta, save_checkpoint, sha256_file
from pixelwise.engine.loading import load_model, resolve_model
from pixelwise.errors import PixelwiseError
from pixelwise.pretrained import ENV_VAR, bundled_path, list_bundled, pretrained_dir, search_dirs

KWARGS = {"base_channels": 4, "depth": 2}
NAMES = ["bg", "red", "green"]
COLORS = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int, h: int = 48, w: int = 64, seed: int = 1) -> list[np.ndarray]:
    """Smooth random colour fields (bicubic upsampling of 6×8 noise): regions, not pixel noise."""
    rng = np.random.default_rng(seed)
    low = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in range(n)]
    return [np.asarray(Image.fromarray(x).resize((w, h), Image.Resampling.BICUBIC)) for x in low]


def tiny(seed: int = 2, names: list[str] = NAMES) -> tuple[torch.nn.Module, ModelMeta]:
    """A tiny U-Net whose predictions vary over an image like a trained model's: BatchNorm
    statistics measured on images like :func:`_images`, no class bias."""
    torch.manual_seed(seed)
    model = pixelwise.create_model("unet", num_classes=len(names), in_channels=3, **KWARGS)
    meta = ModelMeta(
        arch="unet",
        num_classes=len(names),
        in_channels=3,
        class_names=list(names),
        colors=COLORS[: len(names)],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        model_kwargs=dict(KWARGS),
        dataset="synthetic",
    )
    x = (torch.from_numpy(np.stack(_images(8, seed=100))).permute(0, 3, 1, 2) / 255 - 0.5) / 0.25
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: the exact statistics of the batch
    model.train()
    with torch.no_grad():
        model(x)
        model.head.bias.zero_()
    return model.eval(), meta


@pytest.fixture
def bundles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PIXELWISE_PRETRAINED_DIR pointed at an empty tmp folder."""
    folder = tmp_path / "bundles"
    folder.mkdir()
    monkeypatch.setenv(ENV_VAR, str(folder))
    return folder


# ---- format ----------------------------------------------------------------------------------------


def test_float32_round_trip_is_exact(tmp_path: Path) -> None:
    model, meta = tiny()
    extra = {"test_miou": 0.4314, "recipe": "configs/camvid_unet.yaml", "licence": "Apache-2.0"}
    path = write_bundle(
        (model, meta), tmp_path, "tiny", dtype="float32", input_size=(32, 48), extra=extra
    )
    assert path == tmp_path / "tiny.json"
    assert (tmp_path / "tiny.safetensors").is_file()
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"
    back, meta2, info = read_bundle(path)
    assert meta2 == meta
    assert info["input_size"] == [32, 48] and info["dtype"] == "float32"
    assert info["extra"] == extra
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    want, got = model.state_dict(), back.state_dict()
    assert want.keys() == got.keys()
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    # the JSON is plain and readable by itself
    desc = json.loads(path.read_text())
    assert desc["meta"]["class_names"] == NAMES and desc["weights"] == "tiny.safetensors"


def test_float16_round_trip_within_rounding_and_same_labels(tmp_path: Path) -> None:
    model, meta = tiny()
    path16 = write_bundle((model, meta), tmp_path / "16", "tiny", dtype="float16")
    path32 = write_bundle((model, meta), tmp_path / "32", "tiny", dtype="float32")
    raw = load_file(str(path16.with_suffix(".safetensors")))
    counters = [k for k in raw if k.endswith("num_batches_tracked")]
    assert counters and all(raw[k].dtype == torch.int64 for k in counters)
    assert all(v.dtype == torch.float16 for k, v in raw.items() if k not in counters)
    size16 = path16.with_suffix(".safetensors").stat().st_size
    size32 = path32.with_suffix(".safetensors").stat().st_size
    assert size16 < 0.6 * size32
    back, _, info = read_bundle(path16)
    assert info["dtype"] == "float16" and info["input_size"] == [360, 480]
    for key, value in model.state_dict().items():
        got = back.state_dict()[key]
        if not value.is_floating_point():
            assert torch.equal(got, value), key
            continue
        assert got.dtype == torch.float32, key
        tol = value.abs() * 2.0**-11 + 2.0**-24  # half a float16 ulp, or its subnormal step
        assert bool(((got - value).abs() <= tol).all()), key
    a = Segmenter(model, meta, device="cpu")
    b = Segmenter(back, meta, device="cpu")
    images = _images(8, 64, 64)
    labels = a.predict(images)
    assert np.bincount(labels.ravel(), minlength=3).min() > 0.1 * labels.size  # not one class
    agree = (labels == b.predict(images)).mean()
    assert agree >= 0.999, agree


def test_bundle_from_a_checkpoint_equals_the_model(tmp_path: Path) -> None:
    model, meta = tiny()
    ckpt = tmp_path / "best.ckpt"
    save_checkpoint(ckpt, {"meta": meta.to_dict(), "model": model.state_dict()})
    back, meta2, _ = read_bundle(
        write_bundle(load_model(ckpt), tmp_path, "fromckpt", dtype="float32")
    )
    assert meta2 == meta
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"name": "../evil"}, "bundle name"),
        ({"name": "has.dot"}, "bundle name"),
        ({"dtype": "int8"}, "int8"),
        ({"input_size": (0, 480)}, "input size"),
        ({"input_size": (360,)}, "input size"),
        ({"extra": {"when": object()}}, "JSON"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path: Path, kwargs: dict, needle: str) -> None:
    args = {"name": "ok", **kwargs}
    name = args.pop("name")
    with pytest.raises(PixelwiseError, match=needle) as err:
        write_bundle(tiny(), tmp_path, name, **args)
    assert "\n" not in str(err.value)


def test_float16_overflow_is_refused(tmp_path: Path) -> None:
    model, meta = tiny()
    with torch.no_grad():
        model.head.weight[0, 0, 0, 0] = 1e6
    with pytest.raises(PixelwiseError, match="float32"):
        write_bundle((model, meta), tmp_path, "big")
    write_bundle((model, meta), tmp_path, "big", dtype="float32")


# ---- safetensors only ------------------------------------------------------------------------------


class _Payload:
    """Unpickling this object would create the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_garbage_weights_fail_the_checksum_in_one_line(tmp_path: Path) -> None:
    path = write_bundle(tiny(), tmp_path, "tiny")
    path.with_suffix(".safetensors").write_bytes(b"not a safetensors file at all" * 10)
    with pytest.raises(PixelwiseError, match="checksum") as err:
        read_bundle(path)
    assert "\n" not in str(err.value) and "tiny.safetensors" in str(err.value)


@pytest.mark.parametrize("kind", ["garbage", "pickle", "empty"])
def test_non_safetensors_weights_are_refused_without_unpickling(tmp_path: Path, kind: str) -> None:
    path = write_bundle(tiny(), tmp_path, "tiny")
    weights = path.with_suffix(".safetensors")
    marker = tmp_path / "unpickled"
    payload = {
        "garbage": b"\x00\x01garbage" * 50,
        "pickle": pickle.dumps({"model": _Payload(marker)}),
        "empty": b"",
    }[kind]
    weights.write_bytes(payload)
    desc = json.loads(path.read_text())
    desc["sha256"] = sha256_file(weights)  # it passes the checksum: the parser must refuse it
    path.write_text(json.dumps(desc))
    with pytest.raises(PixelwiseError, match="not a readable safetensors file") as err:
        read_bundle(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_missing_or_foreign_files_are_one_line_errors(tmp_path: Path) -> None:
    path = write_bundle(tiny(), tmp_path, "tiny")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(PixelwiseError, match="not a pixelwise bundle"):
        read_bundle(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PixelwiseError, match="not a readable bundle description"):
        read_bundle(tmp_path / "bad.json")
    with pytest.raises(PixelwiseError, match="bundle description not found"):
        read_bundle(tmp_path / "nothing.safetensors")
    desc = json.loads(path.read_text())
    desc["weights"] = "../../etc/passwd"
    path.write_text(json.dumps(desc))
    with pytest.raises(PixelwiseError, match="'weights' must name a file beside it"):
        read_bundle(path)
    path.with_suffix(".safetensors").unlink()
    desc["weights"] = "tiny.safetensors"
    path.write_text(json.dumps(desc))
    with pytest.raises(PixelwiseError, match="bundle weights not found"):
        read_bundle(path)


# ---- loading by name -------------------------------------------------------------------------------


def test_bundled_models_load_by_name(bundles: Path) -> None:
    write_bundle(tiny(), bundles, "camvid", input_size=(32, 48))
    write_bundle(tiny(names=["membrane", "cell"]), bundles, "membrane")
    (bundles / "notes.txt").write_text("not a bundle")
    assert {"camvid", "membrane"} <= set(list_bundled()) and "notes" not in list_bundled()
    assert search_dirs()[0] == bundles and pretrained_dir() == bundles
    assert bundled_path("camvid") == bundles / "camvid.json"
    seg = pixelwise.load("camvid", device="cpu")
    assert seg.class_names == NAMES
    seg = Segmenter.from_checkpoint("membrane", device="cpu")
    assert seg.class_names == ["membrane", "cell"]
    assert bundle_info("camvid")["input_size"] == [32, 48]
    # a bundle's files load by path too
    assert pixelwise.load(bundles / "camvid.safetensors", device="cpu").class_names == NAMES


def test_an_existing_file_beats_a_bundled_name(
    bundles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_bundle(tiny(), bundles, "camvid")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "camvid").mkdir()  # a folder of that name is not a model: the bundle is used
    assert resolve_model("camvid") == bundles / "camvid.json"
    (work / "camvid").rmdir()
    model, meta = tiny(names=["a", "b", "c"])
    save_checkpoint(work / "camvid", {"meta": meta.to_dict(), "model": model.state_dict()})
    assert resolve_model("camvid") == Path("camvid")
    assert pixelwise.load("camvid", device="cpu").class_names == ["a", "b", "c"]


def test_unknown_name_lists_the_bundled_ones(bundles: Path) -> None:
    write_bundle(tiny(), bundles, "camvid")
    write_bundle(tiny(), bundles, "membrane")
    with pytest.raises(PixelwiseError) as err:
        pixelwise.load("cityscapes")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cityscapes:")
    assert "camvid" in msg and "membrane" in msg
    # a path that does not exist is still reported as a missing file, not as a name
    with pytest.raises(PixelwiseError, match="checkpoint not found"):
        pixelwise.load("runs/nothing/best.ckpt")


def test_without_the_environment_variable_the_package_folder_is_searched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    package = Path(pixelwise.__file__).parent / "pretrained"
    assert search_dirs() == [package] and pretrained_dir() == package


def test_package_data_ships_the_bundles() -> None:
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"pixelwise.pretrained" = ["*.safetensors", "*.json"]' in text


# ---- command line ----------------------------------------------------------------------------------


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        cli.main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_bundle_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, meta = tiny()
    ckpt = tmp_path / "best.ckpt"
    save_checkpoint(ckpt, {"meta": meta.to_dict(), "model": model.state_dict()})
    code, out, err = _main(
        [
            "bundle",
            "--model",
            str(ckpt),
            "--name",
            "tiny",
            "--out",
            str(tmp_path / "b"),
            "--input-size",
            "32",
            "48",
            "--extra",
            "test_miou=0.4314",
            "--extra",
            "licence=Apache-2.0",
        ],
        capsys,
    )
    assert code == 0, err
    info = bundle_info(tmp_path / "b" / "tiny.json")
    assert info["dtype"] == "float16" and info["input_size"] == [32, 48]
    assert info["extra"] == {"test_miou": 0.4314, "licence": "Apache-2.0"}
    assert "labels agree on" in out and "tiny.safetensors" in out
    code, _, err = _main(
        ["bundle", "--model", str(ckpt), "--name", "x", "--out", str(tmp_path), "--extra", "oops"],
        capsys,
    )
    assert code == 2 and err.strip().startswith("error: --extra 'oops'")


def test_bundle_command_defaults_to_the_pretrained_folder(
    bundles: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, meta = tiny()
    ckpt = tmp_path / "best.ckpt"
    save_checkpoint(ckpt, {"meta": meta.to_dict(), "model": model.state_dict()})
    code, _, err = _main(
        ["bundle", "--model", str(ckpt), "--name", "camvid", "--dtype", "float32", "--no-check"],
        capsys,
    )
    assert code == 0, err
    assert (bundles / "camvid.json").is_file() and (bundles / "camvid.safetensors").is_file()


def test_model_omitted_uses_the_bundled_camvid(
    bundles: Path, synth, capsys: pytest.CaptureFixture[str]
) -> None:
    write_bundle(tiny(), bundles, "camvid")
    masks = {f"s{i}": np.random.default_rng(i).integers(0, 3, (24, 32), np.uint8) for i in range(3)}
    for m in masks.values():
        m[0, :3] = [0, 1, 2]
    data = synth.paired(masks, folder="data")
    out = synth.root / "pred"
    code, stdout, err = _main(
        ["predict", str(data / "images"), "--out", str(out), "--workers", "0", "--quiet"], capsys
    )
    assert code == 0, err
    assert sorted(p.name for p in out.glob("s?.png")) == ["s0.png", "s1.png", "s2.png"]
    assert np.asarray(Image.open(out / "s0.png")).shape == (24, 32)
    code, stdout, err = _main(
        ["evaluate", "--data", str(data), "--split", "all", "--workers", "0", "--quiet"], capsys
    )
    assert code == 0, err
    assert "mIoU" in stdout
    code, _, err = _main(
        ["predict", str(data / "images"), "--out", str(out), "--model", "nope"], capsys
    )
    assert code == 2 and "bundled: camvid" in err and len(err.strip().splitlines()) == 1


def test_amp_option_scores_like_float32_and_rejects_unknown_values(
    bundles: Path, synth, capsys: pytest.CaptureFixture[str]
) -> None:
    """--amp bf16 runs the forward pass under bfloat16 autocast: on a tiny model the evaluation
    report matches float32 closely; an unknown --amp is a one-line error (exit 2)."""
    write_bundle(tiny(), bundles, "camvid")
    masks = {f"s{i}": np.random.default_rng(i).integers(0, 3, (24, 32), np.uint8) for i in range(3)}
    data = synth.paired(masks, folder="data")
    reports = {}
    for amp in ("off", "bf16"):
        out = synth.root / f"report_{amp}.json"
        args = ["evaluate", "--data", str(data), "--split", "all", "--workers", "0", "--quiet"]
        code, _, err = _main([*args, "--amp", amp, "--out", str(out)], capsys)
        assert code == 0, err
        reports[amp] = json.loads(out.read_text())
    assert abs(reports["bf16"]["miou"] - reports["off"]["miou"]) < 0.02
    assert abs(reports["bf16"]["pixel_accuracy"] - reports["off"]["pixel_accuracy"]) < 0.02
    seg_bf16 = pixelwise.load("camvid", amp="bf16")
    assert seg_bf16.amp_dtype == torch.bfloat16 and pixelwise.load("camvid").amp_dtype is None
    code, _, err = _main(
        ["evaluate", "--data", str(data), "--split", "all", "--amp", "fp8"], capsys
    )
    assert code == 2 and "fp8" in err and len(err.strip().splitlines()) == 1


# ---- a checked inference precision (``inference.amp``) ------------------------------------------

CHECK = {"data": "synthetic", "split": "all", "images": 3, "miou_float32": 0.5, "miou_amp": 0.5}


@pytest.mark.parametrize("native", [True, False])
def test_a_recorded_amp_is_used_only_where_the_hardware_runs_it_natively(
    bundles: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """amp="model" (the default of load, predict, evaluate, serve) runs a bundle under the bf16 it
    records where amp="auto" would pick bf16 on that device, float32 elsewhere; a bundle without
    the record, and a checkpoint, run in float32; an explicit amp always wins."""
    import pixelwise.engine.bundle as bundle_mod

    real = bundle_mod.resolve_amp
    monkeypatch.setattr(
        bundle_mod,
        "resolve_amp",
        lambda amp, dev: (torch.bfloat16 if native else None) if amp == "auto" else real(amp, dev),
    )
    model, meta = tiny()
    write_bundle((model, meta), bundles, "checked", inference={"amp": "bf16", "check": CHECK})
    write_bundle((model, meta), bundles, "plain")
    assert bundle_info("checked")["inference"] == {"amp": "bf16", "check": CHECK}
    assert "inference" not in bundle_info("plain")
    expected = torch.bfloat16 if native else None
    assert pixelwise.load("checked").amp_dtype == expected
    assert pixelwise.load("checked").amp == ("bf16" if native else "off")
    assert pixelwise.load("checked", amp="off").amp_dtype is None
    assert pixelwise.load("plain").amp_dtype is None
    assert pixelwise.load("plain", amp="bf16").amp_dtype == torch.bfloat16
    ckpt = bundles.parent / "m.ckpt"
    save_checkpoint(ckpt, {"meta": meta.to_dict(), "model": model.state_dict()})
    assert pixelwise.load(ckpt).amp_dtype is None


@pytest.mark.parametrize(
    ("inference", "needle"),
    [
        ({"amp": "fp8", "check": CHECK}, "inference amp 'fp8'"),
        ({"amp": "bf16"}, "without the check"),
        ("bf16", "inference amp 'bf16'"),
    ],
)
def test_a_bad_inference_record_is_a_one_line_error(
    tmp_path: Path, inference: object, needle: str
) -> None:
    with pytest.raises(PixelwiseError, match=needle) as err:
        write_bundle(tiny(), tmp_path, "x", inference=inference)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
    path = write_bundle(tiny(), tmp_path, "y")
    info = json.loads(path.read_text())
    info["inference"] = inference
    path.write_text(json.dumps(info))
    with pytest.raises(PixelwiseError, match=needle):
        bundle_info(path)


def test_bundle_amp_is_checked_on_data_and_recorded(
    tmp_path: Path, synth, capsys: pytest.CaptureFixture[str]
) -> None:
    """pixelwise bundle --amp bf16 --check-data DATA scores the bundle in float32 and bf16 on the
    split, records both in its inference block (the same figures evaluate reports), and the
    evaluation report states the precision it ran under."""
    model, meta = tiny()
    ckpt = tmp_path / "best.ckpt"
    save_checkpoint(ckpt, {"meta": meta.to_dict(), "model": model.state_dict()})
    masks = {f"s{i}": np.random.default_rng(i).integers(0, 3, (24, 32), np.uint8) for i in range(3)}
    data = synth.paired(masks, folder="data")
    args = ["bundle", "--model", str(ckpt), "--name", "t", "--out", str(tmp_path / "b")]
    code, _, err = _main([*args, "--amp", "bf16"], capsys)
    assert code == 2 and "--check-data" in err and len(err.strip().splitlines()) == 1
    code, out, err = _main(
        [
            *args,
            "--amp",
            "bf16",
            "--check-data",
            str(data),
            "--check-split",
            "all",
            "--workers",
            "0",
        ],
        capsys,
    )
    assert code == 0, err
    assert "bf16 checked on" in out
    check = bundle_info(tmp_path / "b" / "t.json")["inference"]["check"]
    assert check["split"] == "all" and check["images"] == 3
    for amp, key in (("off", "miou_float32"), ("bf16", "miou_amp")):
        report = tmp_path / f"{amp}.json"
        code, _, err = _main(
            [
                "evaluate",
                "--data",
                str(data),
                "--split",
                "all",
                "--model",
                str(tmp_path / "b" / "t.json"),
                "--amp",
                amp,
                "--workers",
                "0",
                "--quiet",
                "--out",
                str(report),
            ],
            capsys,
        )
        assert code == 0, err
        rep = json.loads(report.read_text())
        assert rep["amp"] == amp
        assert rep["miou"] == pytest.approx(check[key], abs=1e-6)


def test_bundle_amp_losing_accuracy_is_refused(
    tmp_path: Path, synth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A precision that scores more than 0.1 mIoU point below float32 is not recorded."""
    import dataclasses
    import importlib

    from pixelwise.engine.evaluate import check_amp

    evaluate_mod = importlib.import_module(
        "pixelwise.engine.evaluate"
    )  # the module, not the function
    real = evaluate_mod.evaluate

    def lower_under_bf16(seg, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        result = real(seg, *args, **kwargs)
        if seg.amp == "bf16":
            result.scores = dataclasses.replace(result.scores, miou=result.scores.miou - 0.0015)
        return result

    monkeypatch.setattr(evaluate_mod, "evaluate", lower_under_bf16)
    masks = {f"s{i}": np.random.default_rng(i).integers(0, 3, (24, 32), np.uint8) for i in range(3)}
    spec = pixelwise.load_dataset_spec(synth.paired(masks, folder="data"))
    path = write_bundle(tiny(), tmp_path, "t")
    seg = Segmenter.from_checkpoint(path, device="cpu", amp="off")
    with pytest.raises(PixelwiseError, match="more than 0.1 point lower") as err:
        check_amp(seg, "bf16", spec, "all", num_workers=0)
    assert "\n" not in str(err.value)
    with pytest.raises(PixelwiseError, match="records only bf16"):
        check_amp(seg, "fp16", spec, "all", num_workers=0)


def test_help_names_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("predict", "evaluate", "demo"):
        code, out, _ = _main([command, "--help"], capsys)
        assert code == 0
        assert "camvid" in out and "bundled" in out, command


# ---- the shipped default model against its model card ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("amp", "report"), [("model", "camvid_test.json"), ("off", "camvid_test_float32.json")]
)
def test_shipped_camvid_reproduces_its_model_card(require_data, amp: str, report: str) -> None:  # noqa: ANN001
    """The default model's card figures (docs/models/camvid.md) are what the shipped bundle scores on
    CamVid test now — at its default precision (the bf16 its bundle records as checked, where this
    CPU runs bf16 natively) and in float32: mIoU and every class IoU within 0.1 point; and the
    bundle's own record of its check agrees."""
    require_data("camvid")
    root = Path(__file__).resolve().parents[1]
    card = json.loads((root / "docs/models/results" / report).read_text())
    spec = pixelwise.load_dataset_spec(root / "configs/data/camvid.yaml")
    seg = pixelwise.load("camvid", amp=amp)
    result = pixelwise.evaluate(seg, spec, "test", progress=False)
    assert result.num_images == card["num_images"] == 233
    scores = result.scores
    assert abs(scores.miou - card["miou"]) <= 0.001, (scores.miou, card["miou"])
    ious = {c["name"]: c["iou"] for c in card["per_class"]}
    for name, iou in zip(spec.class_names, scores.iou, strict=True):
        assert abs(iou - ious[name]) <= 0.001, (name, iou, ious[name])
    info = bundle_info("camvid")
    # the bundle's own description states the same figure, in percent, and its bf16 check
    assert abs(info["extra"]["test_miou"] - 100 * card["miou"]) < 0.006
    check = info["inference"]["check"]
    key = "miou_float32" if seg.amp == "off" else "miou_amp"
    assert abs(check[key] - scores.miou) <= 0.001 and check["images"] == 233
