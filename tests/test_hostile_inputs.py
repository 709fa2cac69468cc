"""The hostile-input corpus (:mod:`hostile`) through every entry point that reads images: the readers,
dataset loading, ``pixelwise data validate / inspect / convert``, ``pixelwise evaluate``,
``pixelwise predict``, ``pixelwise demo`` (the CLI in process) and the HTTP service. Each bad file gets one line naming it and the reason, a non-zero
exit (or the right HTTP status), no traceback, no partial output; the good inputs of the same run are
still processed. Property-based tests (hypothesis) cover the readers and transforms over sizes,
dtypes and channel counts."""

from __future__ import annotations

import errno
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from hostile import MASK_SPLITS, Case, hostile_dataset, hostile_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelwise.cli import main
from pixelwise.data import SegmentationDataset, build_eval_transform, build_train_transform
from pixelwise.data.dataset import load_pair
from pixelwise.data.io import read_image, read_mask, to_uint8
from pixelwise.data.spec import load_dataset_spec, resolve_split
from pixelwise.engine import predict as predict_mod
from pixelwise.engine.checkpoint import ModelMeta, save_checkpoint
from pixelwise.errors import PixelwiseError, printable
from pixelwise.registry import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["bg", "red", "green"]
COLORS = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return hostile_images(tmp_path_factory.mktemp("hostile") / "images")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny U-Net checkpoint (untrained: its masks are arbitrary but well-formed)."""
    meta = ModelMeta(
        arch="unet",
        num_classes=3,
        in_channels=3,
        class_names=NAMES,
        colors=COLORS,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        model_kwargs={"base_channels": 4, "depth": 2},
    )
    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, in_channels=3, base_channels=4, depth=2)
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    save_checkpoint(path, {"meta": meta.to_dict(), "model": model.state_dict()})
    return path


_cli = run_cli


def _one_line_errors(err: str, prefix: str) -> list[str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert all(ln.startswith(prefix) for ln in lines), err
    return lines


# ---- the readers ------------------------------------------------------------------------------


def test_every_image_is_converted_or_refused_by_name(corpus: list[Case]) -> None:
    for case in corpus:
        if case.valid:
            arr = read_image(case.path)
            assert arr.dtype == np.uint8 and arr.shape == (*case.size, 3), case.name
            gray = read_image(case.path, channels=1)
            assert gray.shape == (*case.size, 1), case.name
        else:
            with pytest.raises(PixelwiseError) as info:
                read_image(case.path)
            msg = str(info.value)
            assert "\n" not in msg and str(case.path) in msg, msg


def test_reasons_say_what_is_wrong(corpus: list[Case]) -> None:
    why = {c.name: str(_error(lambda c=c: read_image(c.path))) for c in corpus if not c.valid}
    assert "empty file (0 bytes)" in why["zero_bytes.png"]
    assert "truncated" in why["truncated.png"] and "truncated" in why["truncated.jpg"]
    assert "not a readable image" in why["text_named.png"]
    assert "too large" in why["bomb.png"] and "2500000000 pixels" in why["bomb.png"]
    assert "directory" in why["folder_named.png"]


def _error(fn: Callable[[], object]) -> Exception:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no error raised")


def test_exif_orientation_is_applied(corpus: list[Case]) -> None:
    case = next(c for c in corpus if c.name == "exif_rot6.jpg")
    stored = np.asarray(Image.open(case.path).convert("RGB"))
    assert stored.shape[:2] == (20, 40)
    arr = read_image(case.path)
    assert arr.shape[:2] == (40, 20)
    # orientation 6 = the stored image turned 90° clockwise
    assert np.abs(arr.astype(int) - np.rot90(stored, k=-1).astype(int)).mean() < 2


def test_symlink_loop_read_directly_is_one_line(tmp_path: Path) -> None:
    os.symlink("b.png", tmp_path / "a.png")
    os.symlink("a.png", tmp_path / "b.png")
    with pytest.raises(PixelwiseError, match="symbolic link loop"):
        read_image(tmp_path / "a.png")
    with pytest.raises(PixelwiseError, match="symbolic link loop"):
        read_mask(tmp_path / "a.png")


# ---- dataset loading, data validate, evaluate --------------------------------------------------

BAD_SPLITS = [*MASK_SPLITS, "loop"]


@pytest.fixture(scope="module", params=["index", "rgb"])
def dataset(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hostile_dataset(
        tmp_path_factory.mktemp(f"ds_{request.param}"), rgb_masks=request.param == "rgb"
    )


def _bad_file(spec_path: Path, split: str) -> str:
    """The file name an error about ``split`` must mention."""
    return {
        "out_of_range": "bad.png",
        "wrong_size": "bad.png",
        "zero_mask": "bad.png",
        "bad_image": "bad.png",
        "empty": "empty",
        "loop": "loop_a.png",
    }[split]


def test_dataset_loading(dataset: Path) -> None:
    spec = load_dataset_spec(dataset)
    for split in ("clean", "listed"):  # listed: a list file naming a file that is not UTF-8
        ds = SegmentationDataset(
            spec, split, build_eval_transform(mean=(0.5,) * 3, std=(0.25,) * 3)
        )
        assert len(ds) == (3 if split == "clean" else 2)
        assert all(item["mask"].max() < 3 for item in ds)
        assert any(b"caf\xe9" in os.fsencode(s.image) for s in ds.samples)
    for split in BAD_SPLITS:
        samples, problems = resolve_split(spec, split)
        errors = list(problems)
        for s in samples:
            try:
                load_pair(s, spec)
            except PixelwiseError as exc:
                errors.append(str(exc))
        assert errors, split
        assert any(_bad_file(dataset, split) in e for e in errors), (split, errors)
        assert all("\n" not in e for e in errors)


def test_data_validate(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "data", "validate", str(dataset), "--split", "clean")
    assert code == 0 and "split clean: 3 images, ok" in out and not err
    code, out, err = _cli(capsys, "data", "validate", str(dataset), "--split", "listed")
    assert code == 0 and "split listed: 2 images, ok" in out and not err
    for split in BAD_SPLITS:
        code, out, err = _cli(capsys, "data", "validate", str(dataset), "--split", split)
        assert code == 1, (split, out, err)
        lines = _one_line_errors(err, "problem: ")
        assert any(_bad_file(dataset, split) in ln for ln in lines), (split, lines)
        reason = MASK_SPLITS.get(split, "symbolic link loop")
        assert any(reason in ln for ln in lines), (split, lines)


def test_evaluate(dataset: Path, model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("evaluate", "--data", str(dataset), "--model", str(model_file), "--workers", "0")
    code, out, err = _cli(capsys, *base, "--split", "clean", "--quiet")
    assert code == 0 and "mIoU" in out, err
    for split in BAD_SPLITS:
        report = dataset.parent / f"{split}.json"
        code, out, err = _cli(capsys, *base, "--split", split, "--quiet", "--out", str(report))
        assert code == 2, (split, out, err)
        (line,) = _one_line_errors(err, "error: ")
        assert _bad_file(dataset, split) in line, line
        assert not report.exists()


def test_debug_shows_the_traceback(dataset: Path, model_file: Path) -> None:
    with pytest.raises(PixelwiseError, match="bad.png"):
        main(
            ["--debug", "evaluate", "--data", str(dataset), "--model", str(model_file)]
            + ["--split", "bad_image", "--workers", "0", "--quiet"]
        )


def test_training_refuses_bad_data_naming_the_file(dataset: Path, tmp_path: Path) -> None:
    from pixelwise.config import RunConfig
    from pixelwise.engine import train

    for split in ("wrong_size", "loop"):
        cfg = RunConfig(
            data={"dataset": str(dataset), "train_split": split, "val_split": None},
            model={"name": "unet", "params": {"base_channels": 4, "depth": 2}},
            augment={"crop_size": [16, 16]},
            train={"epochs": 1, "batch_size": 2, "num_workers": 0, "amp": "off"},
        )
        with pytest.raises(PixelwiseError, match=_bad_file(dataset, split)):
            train(cfg, tmp_path / split, progress=False)
        assert not (tmp_path / split / "last.ckpt").exists()


# ---- data convert -----------------------------------------------------------------------------


def _convert(capsys: pytest.CaptureFixture[str], data: Path, out: Path, split: str):  # noqa: ANN202
    return _cli(capsys, "data", "convert", str(data), "--out", str(out), "--split", split)


def _refused_and_nothing_written(code: int, out: Path, stdout: str, err: str) -> list[str]:
    """convert's contract on failure: exit 1, one ``problem:`` line per problem on stderr, then
    ``nothing written to OUT``; no traceback; neither OUT nor a staging folder beside it."""
    assert code == 1, (out, stdout, err)
    assert "Traceback" not in stdout + err
    *problems, last = [ln for ln in err.splitlines() if ln.strip()]
    assert last == printable(f"nothing written to {out}"), err
    assert problems and all(ln.startswith("problem: ") for ln in problems), err
    assert not out.exists()
    return problems


def test_data_convert(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the good splits (spaces and non-UTF-8 names included) convert, and the result reads back
    for split, n in (("clean", 3), ("listed", 2)):
        code, stdout, err = _convert(capsys, dataset, tmp_path / split, split)
        assert code == 0 and not err, (split, stdout, err)
        code, stdout, err = _cli(capsys, "data", "validate", str(tmp_path / split / "dataset.yaml"))
        assert code == 0 and f"split {split}: {n} images, ok" in stdout, (split, stdout, err)
    # each bad split: its file and the reason on one line, and nothing written, not even the
    # missing folder above --out
    for split in BAD_SPLITS:
        out = tmp_path / "new" / split
        code, stdout, err = _convert(capsys, dataset, out, split)
        problems = _refused_and_nothing_written(code, out, stdout, err)
        reason = MASK_SPLITS.get(split, "symbolic link loop")
        named = [ln for ln in problems if _bad_file(dataset, split) in ln and reason in ln]
        assert named, (split, problems)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "listed"]


def test_data_convert_hostile_images(
    corpus: list[Case], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The image corpus as a dataset, each file with a mask of its (oriented) size: every refused
    image is named with its reason and nothing is written; the accepted ones alone convert."""
    import shutil

    import yaml

    root = tmp_path / "ds"
    files = [c for c in corpus if c.path.is_file()]  # a folder named .png is no sample of a walk
    rng = np.random.default_rng(0)
    for split, cases in (("all", files), ("good", [c for c in files if c.valid])):
        for c in cases:
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(c.path, root / split / "images" / c.name)
            mask = rng.integers(0, 3, c.size or (24, 32), dtype=np.uint8)
            Image.fromarray(mask).save(root / split / "masks" / f"{Path(c.name).stem}.png")
    spec = {
        "name": "hostile_images",
        "root": ".",
        "classes": [{"name": n} for n in NAMES],
        "mask": {"encoding": "index", "ignore_index": 255},
        "splits": {s: {"images": f"{s}/images", "masks": f"{s}/masks"} for s in ("all", "good")},
    }
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump(spec), encoding="utf-8")

    out = tmp_path / "out_all"
    code, stdout, err = _convert(capsys, data, out, "all")
    problems = _refused_and_nothing_written(code, out, stdout, err)
    bad = [c for c in files if not c.valid]
    assert len(problems) == len(bad), problems
    for c in bad:
        path = printable(str(root / "all" / "images" / c.name))
        (line,) = [ln for ln in problems if path + ":" in ln]
        assert len(line) > len(f"problem: {path}: "), line  # a reason follows the name

    out = tmp_path / "out_good"
    code, stdout, err = _convert(capsys, data, out, "good")
    good = [c for c in files if c.valid]
    assert code == 0 and not err, (stdout, err)
    assert f"wrote {len(good)} image/mask pairs" in stdout
    code, stdout, err = _cli(capsys, "data", "validate", str(out / "dataset.yaml"))
    assert code == 0 and f"split good: {len(good)} images, ok" in stdout, (stdout, err)
    for c in good:  # masks at the image's oriented size (the EXIF-rotated JPEG: 40×20)
        with Image.open(out / "masks" / f"{Path(c.name).stem.replace(' ', '_')}.png") as im:
            assert (im.height, im.width) == c.size, c.name


# ---- predict ----------------------------------------------------------------------------------


def test_predict_processes_the_good_and_names_the_bad(
    corpus: list[Case], model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = corpus[0].path.parent
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    os.symlink(".", folder / "self")  # a folder loop: the walk must not follow it
    try:
        out = tmp_path / "out"
        code, stdout, err = _cli(
            capsys, "predict", str(folder), "--out", str(out), "--model", str(model_file),
            "--workers", "2", "--quiet",
        )  # fmt: skip
    finally:
        for name in ("loop_a.png", "loop_b.png", "self"):
            (folder / name).unlink()
    assert code == 1
    lines = _one_line_errors(err, "skipped: ")
    bad = [c for c in corpus if not c.valid and c.path.is_file()]
    assert len(lines) == len(bad) + 2  # + the two looping links
    for c in bad:
        assert sum(printable(str(c.path)) in ln for ln in lines) == 1, c.name
    assert sum("symbolic link loop" in ln for ln in lines) == 2
    good = [c for c in corpus if c.valid]
    assert f"wrote {len(good)} mask(s)" in stdout
    for c in good:
        mask = out / (Path(c.name).stem + ".png")
        assert mask.is_file(), c.name
        with Image.open(mask) as im:
            assert (im.height, im.width) == c.size and im.mode == "P"
    written = {p.name for p in out.iterdir()}
    assert not [n for n in written if n.endswith(".tmp")]
    for c in bad:  # nothing at all for a failed input
        assert not any(n.startswith(Path(c.name).stem) for n in written), c.name


def test_predict_failed_write_leaves_nothing_partial(
    corpus: list[Case], model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    real = predict_mod.write_png

    def full_disk(path, image):  # noqa: ANN001, ANN202
        if Path(path).name == "rgba.png":  # the mask of one input, after its overlay
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, image)

    monkeypatch.setattr(predict_mod, "write_png", full_disk)
    good = [str(c.path) for c in corpus if c.valid and c.size[0] * c.size[1] < 5000]
    code, stdout, err = _cli(
        capsys, "predict", *good, "--out", str(tmp_path), "--model", str(model_file),
        "--workers", "0", "--quiet",
    )  # fmt: skip
    assert code == 1
    (line,) = _one_line_errors(err, "skipped: ")
    assert "rgba.png" in line and "No space left on device" in line
    names = {p.name for p in tmp_path.iterdir()}
    assert "rgba.png" not in names and "rgba_overlay.png" not in names
    assert "cmyk.png" in names and "cmyk_overlay.png" in names
    assert f"wrote {len(good) - 1} mask(s)" in stdout


def test_predict_missing_input_and_empty_folder(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(
        capsys, "predict", str(tmp_path / "nope.png"), str(tmp_path / "empty"),
        "--out", str(tmp_path / "out"), "--model", str(model_file), "--quiet",
    )  # fmt: skip
    assert code == 1
    lines = _one_line_errors(err, "skipped: ")
    assert len(lines) == 2 and "no such file" in lines[0] and "holds no images" in lines[1]


# ---- demo -------------------------------------------------------------------------------------


def test_demo_segments_the_good_and_names_the_bad(
    corpus: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """``pixelwise demo IMAGES`` with the bundled camvid model: two small good images (one named
    with a space, one not UTF-8) among every bad one and a looping link. The good ones are
    segmented; each bad one is one ``skipped:`` line; exit 1; nothing written for a bad one."""
    from pixelwise.pretrained import ENV_VAR

    monkeypatch.delenv(ENV_VAR, raising=False)  # the bundled model
    good = [c for c in corpus if c.name == "name with spaces.png" or c.name.startswith("latin1_")]
    bad = [c for c in corpus if not c.valid]
    os.symlink("loop_b.png", tmp_path / "loop_a.png")
    os.symlink("loop_a.png", tmp_path / "loop_b.png")
    out = tmp_path / "demo"
    inputs = [str(c.path) for c in [*bad, *good]] + [str(tmp_path / "loop_a.png")]
    code, stdout, err = _cli(
        capsys, "demo", *inputs, "--out", str(out), "--no-samples", "--no-eval",
        "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert code == 1, (stdout, err)
    lines = _one_line_errors(err, "skipped: ")
    assert len(lines) == len(bad) + 1, lines
    for c in bad:
        (line,) = [ln for ln in lines if printable(str(c.path)) + ":" in ln]
        assert len(line) > len(printable(f"skipped: {c.path}: ")), line  # and a reason
    assert any("loop_a.png: symbolic link loop" in ln for ln in lines), lines
    assert "folder holds no images" in next(ln for ln in lines if "folder_named.png" in ln)
    assert f"wrote {len(good)} mask(s) and overlay(s), contact_sheet.png" in stdout
    for c in good:
        stem = Path(c.name).stem
        assert any(ln.startswith(printable(f"{c.name} (32×24): ")) for ln in stdout.splitlines())
        with Image.open(out / f"{stem}.png") as im:
            assert (im.height, im.width) == c.size
        assert (out / f"{stem}_overlay.png").is_file()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert len(summary["images"]) == len(good) and len(summary["failed"]) == len(bad) + 1
    assert any("latin1_\\xe9t\\xe9.png" in i["source"] for i in summary["images"])
    expected = {f"{Path(c.name).stem}{end}" for c in good for end in (".png", "_overlay.png")}
    assert {p.name for p in out.iterdir()} == expected | {"contact_sheet.png", "summary.json"}


# ---- the service ------------------------------------------------------------------------------


def test_service_answers_each_case_and_serves_on(corpus: list[Case], model_file: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from pixelwise.engine import Segmenter
    from pixelwise.serve import ServeSettings, create_app

    seg = Segmenter.from_checkpoint(model_file, device="cpu")
    good_png = (corpus[0].path.parent / "name with spaces.png").read_bytes()
    with TestClient(create_app(seg, ServeSettings())) as client:
        for case in corpus:
            if case.path.is_dir():
                continue
            body = case.path.read_bytes()
            r = client.post(
                "/v1/segment?format=json", content=body, headers={"content-type": "image/png"}
            )
            if case.valid:
                assert r.status_code == 200, (case.name, r.text)
                assert [r.json()["height"], r.json()["width"]] == list(case.size), case.name
            else:
                assert r.status_code in (400, 413, 415), (case.name, r.status_code, r.text)
                error = r.json()["error"]
                assert "\n" not in error and "Traceback" not in r.text
            assert client.post("/v1/segment", content=good_png).status_code == 200
        statuses = {
            c.name: client.post("/v1/segment", content=c.path.read_bytes()).status_code
            for c in corpus
            if not c.valid and c.path.is_file()
        }
    assert statuses["bomb.png"] == 413 and statuses["zero_bytes.png"] == 400
    assert statuses["text_named.png"] == 415 and statuses["truncated.png"] == 400


# ---- property-based: readers and transforms -----------------------------------------------------

_DTYPES = {"uint8": ("L", "RGB", "RGBA"), "uint16": ("I;16",), "bool": ("1",)}


@st.composite
def _images(draw: st.DrawFn) -> tuple[np.ndarray, str]:
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    dtype = draw(st.sampled_from(sorted(_DTYPES)))
    mode = draw(st.sampled_from(_DTYPES[dtype]))
    channels = {"L": 1, "RGB": 3, "RGBA": 4}.get(mode, 1)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        arr = rng.random((h, w)) > 0.5
    elif dtype == "uint16":
        arr = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    else:
        shape = (h, w) if channels == 1 else (h, w, channels)
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
    return arr, mode


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sample=_images(), fmt=st.sampled_from(["PNG", "TIFF", "BMP"]), channels=st.sampled_from([1, 3])
)
def test_readers_over_sizes_dtypes_and_channels(
    tmp_path: Path, sample: tuple[np.ndarray, str], fmt: str, channels: int
) -> None:
    arr, mode = sample
    if fmt == "BMP" and mode in ("I;16", "RGBA"):
        mode = "L" if mode == "I;16" else "RGB"
        arr = to_uint8(arr) if arr.dtype != np.uint8 else arr[..., :3]
    im = Image.fromarray(arr) if mode != "1" else Image.fromarray(arr).convert("1")
    path = tmp_path / f"x.{fmt.lower()}"
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    path.write_bytes(buf.getvalue())
    out = read_image(path, channels)
    h, w = arr.shape[:2]
    assert out.dtype == np.uint8 and out.shape == (h, w, channels)
    if mode == "L" and channels == 1:
        assert np.array_equal(out[..., 0], arr)
    if mode == "RGB" and channels == 3:
        assert np.array_equal(out, arr)
    if mode == "I;16":  # scaled by 255/65535, whatever the content
        expect = np.round(arr.astype(np.float64) * 255 / 65535).astype(np.uint8)
        assert np.abs(out[..., 0].astype(int) - expect.astype(int)).max() <= 1
    raw = read_mask(path)
    assert raw.shape[:2] == (h, w)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 64),
    w=st.integers(1, 64),
    channels=st.sampled_from([1, 3]),
    crop=st.integers(8, 48),
    seed=st.integers(0, 1000),
)
def test_transforms_keep_image_and_mask_aligned(
    h: int, w: int, channels: int, crop: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
    mean, std = (0.5,) * channels, (0.25,) * channels
    train_t = build_train_transform(
        crop_size=(crop, crop), scale=(0.5, 1.5), hflip=True, vflip=True, rotate90=True,
        color_jitter=0.2, mean=mean, std=std,
    )  # fmt: skip
    train_t.set_random_seed(seed)
    out = train_t(image=image, mask=mask)
    assert out["image"].shape == (crop, crop, channels)
    assert out["mask"].shape == (crop, crop)
    assert np.isfinite(out["image"]).all()
    assert set(np.unique(out["mask"])) <= {0, 1, 2, 255}  # labels never blended; padding ignored
    eval_t = build_eval_transform(mean=mean, std=std)
    ev = eval_t(image=image, mask=mask)
    assert ev["image"].shape == (h, w, channels) and np.array_equal(ev["mask"], mask)


def test_data_inspect(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pixelwise.data.inspect")
    for split in BAD_SPLITS:
        code, out, err = _cli(capsys, "data", "inspect", str(dataset), "--split", split)
        assert code == 1, (split, out, err)
        assert "Traceback" not in out + err
        problems = [ln for ln in out.splitlines() if "problem:" in ln]
        # every problem names its file, undeclared values included (with their mask files)
        assert any(_bad_file(dataset, split) in ln for ln in problems), (split, problems)
        reason = MASK_SPLITS.get(split, "symbolic link loop")
        assert any(reason in ln for ln in problems), (split, problems)
        if split == "out_of_range":
            (line,) = [ln for ln in problems if "declared class" in ln]
            assert line.endswith("(9 px in 1 file(s): out_of_range/masks/bad.png)"), line
