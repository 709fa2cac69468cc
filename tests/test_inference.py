"""The one inference engine through its users: Segmenter (whole image, sliding windows, TTA),
evaluate, predict over folders (batching, resuming, TIFF/GeoTIFF outputs) and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import three_class_meta, tiny_unet_checkpoint
from PIL import Image
from torch import nn

import pixelwise
from pixelwise.engine import Segmenter, predict_files
from pixelwise.engine.tiling import TileConfig
from pixelwise.engine.tta import TTAConfig
from pixelwise.errors import PixelwiseError

ROOT = Path(__file__).resolve().parents[1]


def _pixel_model() -> nn.Module:
    """A per-pixel model (1×1 conv): every window gives a pixel the same logits."""
    torch.manual_seed(0)
    return nn.Conv2d(3, 3, 1).eval()


def _mask(h: int, w: int, seed: int) -> np.ndarray:
    """Index mask with all three classes (0, 1, 2)."""
    m = np.random.default_rng(seed).integers(0, 3, (h, w), dtype=np.uint8)
    m[0, :3] = [0, 1, 2]
    return m


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- Segmenter --------------------------------------------------------------------------------------


@pytest.mark.parametrize("blend", ["gaussian", "linear", "uniform"])
def test_sliding_windows_equal_whole_image_for_a_per_pixel_model(blend: str) -> None:
    image = _image(97, 131)
    whole = Segmenter(
        _pixel_model(), three_class_meta(), device="cpu", tiling=TileConfig(mode="whole")
    )
    slide = Segmenter(
        _pixel_model(),
        three_class_meta(),
        device="cpu",
        tiling=TileConfig(mode="slide", window=32, overlap=0.5, blend=blend),
    )
    a, b = whole.image_logits(image), slide.image_logits(image)
    assert a.shape == b.shape == (3, 97, 131)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(whole.predict(image), slide.predict(image))
    np.testing.assert_allclose(whole.predict_proba(image), slide.predict_proba(image), atol=1e-5)


def test_auto_tiling_slides_only_beyond_the_pixel_limit() -> None:
    cfg = TileConfig(mode="auto", window=32, max_whole_pixels=64 * 64)
    assert not cfg.use_slide(64, 64)
    assert cfg.use_slide(65, 64)
    assert TileConfig(mode="slide").use_slide(8, 8) and not TileConfig(mode="whole").use_slide(
        10_000, 10_000
    )


def test_streamed_labels_for_an_image_too_large_for_full_logits(monkeypatch) -> None:  # noqa: ANN001
    import pixelwise.engine.predictor as predictor

    image = _image(80, 96)
    seg = Segmenter(
        _pixel_model(), three_class_meta(), device="cpu", tiling=TileConfig(mode="slide", window=32)
    )
    expected = seg.predict(image)
    monkeypatch.setattr(predictor, "FULL_LOGITS_BYTES", 1000)  # now "too large" to hold
    pred = seg.segment(image)
    np.testing.assert_array_equal(pred.labels, expected)
    with pytest.raises(PixelwiseError, match="too large for probabilities"):
        seg.segment(image, probs=True)


def test_tta_without_augmentations_is_the_plain_prediction() -> None:
    image = _image(40, 52)
    plain = Segmenter(_pixel_model(), three_class_meta(), device="cpu")
    ident = Segmenter(
        _pixel_model(), three_class_meta(), device="cpu", tta=TTAConfig(flip=False, scales=(1.0,))
    )
    np.testing.assert_allclose(plain.predict_proba(image), ident.predict_proba(image), atol=1e-5)


def test_flip_tta_averages_the_flipped_prediction() -> None:
    torch.manual_seed(1)
    model = nn.Conv2d(3, 3, (1, 5), padding=(0, 2)).eval()  # not flip-invariant
    image = _image(24, 30)
    plain = Segmenter(model, three_class_meta(), device="cpu")
    tta = Segmenter(
        model, three_class_meta(), device="cpu", tta=TTAConfig(flip=True, scales=(1.0,))
    )
    p = plain.predict_proba(image)
    p_flip = plain.predict_proba(np.ascontiguousarray(image[:, ::-1]))[:, :, ::-1]
    np.testing.assert_allclose(tta.predict_proba(image), (p + p_flip) / 2, atol=1e-5)
    assert not np.allclose(p, p_flip, atol=1e-3)  # the test means something


def test_segment_batch_equals_one_by_one() -> None:
    seg = pixelwise.Segmenter(_pixel_model(), three_class_meta(), device="cpu")
    images = [_image(20, 28, seed=i) for i in range(3)] + [_image(16, 16, seed=9)]
    batch = seg.segment_batch(images, probs=True)
    for im, pred in zip(images, batch, strict=True):
        single = seg.segment(im, probs=True)
        np.testing.assert_array_equal(pred.labels, single.labels)
        np.testing.assert_allclose(pred.probs, single.probs, atol=1e-5)


# ---- predict over files -----------------------------------------------------------------------------


def _folder(tmp_path: Path, n: int = 3) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(n):
        Image.fromarray(_image(24, 32, seed=i)).save(src / f"img{i}.png")
    return src


def test_predict_files_batches_resumes_and_overwrites(tmp_path: Path) -> None:
    seg = Segmenter(_pixel_model(), three_class_meta(), device="cpu")
    src, out = _folder(tmp_path), tmp_path / "out"
    first = predict_files(seg, [str(src)], out, batch_size=2, num_workers=0, progress=False)
    assert [p.name for p in first.written] == ["img0.png", "img1.png", "img2.png"]
    for i in range(3):
        mask = np.array(Image.open(out / f"img{i}.png"))
        np.testing.assert_array_equal(mask, seg.predict(_image(24, 32, seed=i)))
    stamp = (out / "img1.png").stat().st_mtime_ns
    (out / "img2.png").unlink()  # as if interrupted before the last image
    again = predict_files(seg, [str(src)], out, num_workers=0, progress=False)
    assert [p.name for p in again.written] == ["img2.png"]
    assert len(again.skipped) == 2 and (out / "img1.png").stat().st_mtime_ns == stamp
    redo = predict_files(seg, [str(src)], out, overwrite=True, num_workers=0, progress=False)
    assert len(redo.written) == 3 and not redo.skipped
    assert not list(out.glob(".*.tmp"))


def test_predict_files_with_worker_processes_and_a_broken_image(tmp_path: Path) -> None:
    seg = Segmenter(_pixel_model(), three_class_meta(), device="cpu")
    src = _folder(tmp_path, n=2)
    (src / "broken.png").write_bytes(b"not a png")
    summary = predict_files(seg, [str(src)], tmp_path / "out", num_workers=2, progress=False)
    assert sorted(p.name for p in summary.written) == ["img0.png", "img1.png"]
    assert len(summary.failed) == 1 and "broken.png" in summary.failed[0][1]
    assert summary.images_per_second > 0


def test_tiff_in_tiff_out_and_geotiff_lines_up(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    seg = Segmenter(
        _pixel_model(), three_class_meta(), device="cpu", tiling=TileConfig(mode="slide", window=32)
    )
    image = _image(70, 90)
    src = tmp_path / "in"
    src.mkdir()
    transform = from_origin(500000.0, 4600000.0, 0.5, 0.5)
    with rasterio.open(
        src / "ortho.tif",
        "w",
        driver="GTiff",
        width=90,
        height=70,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=transform,
    ) as dst:
        dst.write(image.transpose(2, 0, 1))
    summary = predict_files(seg, [str(src)], tmp_path / "out", num_workers=0, progress=False)
    assert [p.name for p in summary.written] == ["ortho.tif"]
    with rasterio.open(tmp_path / "out" / "ortho.tif") as ds:
        assert ds.crs.to_epsg() == 32633
        assert ds.transform == transform
        assert (ds.width, ds.height) == (90, 70)
        np.testing.assert_array_equal(ds.read(1), seg.predict(image))


# ---- evaluate ---------------------------------------------------------------------------------------


def test_evaluate_with_tta_and_sliding_windows_reports_them(synth) -> None:  # noqa: ANN001
    data = synth.paired({f"m{i}": _mask(40, 56, i) for i in range(3)})
    spec = pixelwise.load_dataset_spec(data)
    assert spec.num_classes == 3
    plain = Segmenter(_pixel_model(), three_class_meta(), device="cpu")
    slide = Segmenter(
        _pixel_model(),
        three_class_meta(),
        device="cpu",
        tiling=TileConfig(mode="slide", window=32),
        tta=TTAConfig(flip=False, scales=(1.0,)),
    )
    a = pixelwise.evaluate(plain, spec, "all", num_workers=0, progress=False)
    b = pixelwise.evaluate(slide, spec, "all", num_workers=0, progress=False)
    np.testing.assert_array_equal(a.confusion.matrix.numpy(), b.confusion.matrix.numpy())
    rep = pixelwise.report_dict(b)
    assert rep["tta"]["flip"] is False and list(rep["tta"]["scales"]) == [1.0]
    assert rep["tiling"]["mode"] == "slide" and rep["tiling"]["window"] == 32


# ---- command line -----------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pixelwise.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_cli_predict_with_tta_tiling_and_resume(tmp_path: Path) -> None:
    ckpt = tiny_unet_checkpoint(tmp_path)
    src = _folder(tmp_path, n=2)
    out = tmp_path / "out"
    args = ["predict", str(src), "--model", str(ckpt), "--out", str(out), "--quiet"]
    r = _cli(*args, "--tta", "--tta-scales", "0.5,1", "--tile", "slide", "--window", "16")
    assert r.returncode == 0, r.stderr
    assert "wrote 2 mask(s)" in r.stdout and "img/s" in r.stdout
    assert "TTA" in r.stdout and "tiling slide" in r.stdout
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert "wrote 0 mask(s)" in r.stdout and "skipped 2" in r.stdout


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--tile", "sideways", "sideways"),
        ("--overlap", "1.5", "overlap"),
        ("--tta-scales", "big", "--tta-scales"),
    ],
)
def test_cli_bad_inference_options_are_one_line(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    ckpt = tiny_unet_checkpoint(tmp_path)
    src = _folder(tmp_path, n=1)
    r = _cli(
        "predict",
        str(src),
        "--model",
        str(ckpt),
        "--out",
        str(tmp_path / "o"),
        "--tta",
        option,
        value,
    )
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_evaluate_json_records_tta(tmp_path: Path, synth) -> None:  # noqa: ANN001
    ckpt = tiny_unet_checkpoint(tmp_path)
    data = synth.paired({f"m{i}": _mask(32, 40, i) for i in range(2)})
    report = tmp_path / "r.json"
    r = _cli(
        "evaluate",
        "--model",
        str(ckpt),
        "--data",
        str(data),
        "--split",
        "all",
        "--tta",
        "--out",
        str(report),
        "--quiet",
        "--workers",
        "0",
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    assert list(rep["tta"]["scales"]) == [0.75, 1.0, 1.25] and rep["tta"]["flip"] is True


def test_predict_files_writes_the_region_summary(tmp_path: Path) -> None:
    seg = Segmenter(_pixel_model(), three_class_meta(), device="cpu")
    src = _folder(tmp_path, n=1)
    predict_files(seg, [str(src)], tmp_path / "out", regions=True, num_workers=0, progress=False)
    summary = json.loads((tmp_path / "out" / "img0_regions.json").read_text())
    labels = np.array(Image.open(tmp_path / "out" / "img0.png"))
    counts = {c["index"]: c["pixels"] for c in summary["classes"]}
    assert counts == {
        int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True), strict=True)
    }
    assert sum(r["area"] for r in summary["regions"]) == labels.size
    assert abs(sum(c["fraction"] for c in summary["classes"]) - 1.0) < 1e-6


def test_cli_export_then_predict_and_evaluate_with_the_onnx_file(tmp_path: Path, synth) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    ckpt = tiny_unet_checkpoint(tmp_path)
    onnx_path = tmp_path / "tiny.onnx"
    r = _cli("export", "--model", str(ckpt), "--format", "onnx", "--out", str(onnx_path))
    assert r.returncode == 0, r.stderr
    assert onnx_path.is_file() and "max |Δ logit|" in r.stdout
    diffs = [float(line.rsplit(" ", 1)[1]) for line in r.stdout.splitlines() if "Δ logit" in line]
    assert len(diffs) == 2 and max(diffs) < 1e-4
    # predict: the ONNX model's masks equal the checkpoint's
    src = _folder(tmp_path, n=2)
    for model, out in ((ckpt, "pt"), (onnx_path, "ort")):
        r = _cli(
            "predict", str(src), "--model", str(model), "--out", str(tmp_path / out), "--quiet"
        )
        assert r.returncode == 0, r.stderr
    for i in range(2):
        a = np.array(Image.open(tmp_path / "pt" / f"img{i}.png"))
        b = np.array(Image.open(tmp_path / "ort" / f"img{i}.png"))
        assert (a == b).mean() > 0.999
    data = synth.paired({f"m{i}": _mask(30, 44, i) for i in range(2)})
    r = _cli(
        "evaluate",
        "--model",
        str(onnx_path),
        "--data",
        str(data),
        "--split",
        "all",
        "--quiet",
        "--workers",
        "0",
    )
    assert r.returncode == 0, r.stderr
    assert "mIoU" in r.stdout
    r = _cli("export", "--model", str(ckpt), "--format", "tflite", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "only onnx" in r.stderr
