"""End to end through the command line: train the smoke recipe → evaluate → predict, and the error
contract (one line, non-zero exit, traceback only with --debug)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pixelwise", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_missing_config_is_one_line_error(tmp_path: Path) -> None:
    r = run("train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope.yaml" in err[0]
    assert "Traceback" not in r.stderr


def test_debug_shows_traceback(tmp_path: Path) -> None:
    r = run("--debug", "train", str(tmp_path / "nope.yaml"))
    assert r.returncode != 0
    assert "Traceback" in r.stderr


def test_bad_dataset_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(6):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / f"{i}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "3.png")  # wrong size
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "data: {dataset: .}\nmodel: {name: unet, params: {base_channels: 4, depth: 2}}\n"
        "augment: {crop_size: [16, 16]}\ntrain: {epochs: 1, batch_size: 2, num_workers: 0, "
        "amp: 'off', max_steps: 1}\n"
    )
    r = run("train", str(cfg), "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    assert "3.png" in r.stderr and "size" in r.stderr
    assert not (tmp_path / "out" / "last.ckpt").exists()


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid not present")
def test_smoke_train_evaluate_predict(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run("train", "configs/smoke.yaml", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    for name in (
        "best.ckpt",
        "last.ckpt",
        "metrics.csv",
        "config.yaml",
        "manifest.json",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,train_loss,val_miou")
    assert len(rows) >= 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["torch"] and manifest["command"]

    report = tmp_path / "report.json"
    r = run(
        "evaluate",
        "--model",
        str(out / "best.ckpt"),
        "--data",
        "configs/data/camvid.yaml",
        "--split",
        "val",
        "--out",
        str(report),
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    assert rep["num_images"] == 101
    assert 0.0 <= rep["miou"] <= 1.0
    assert [c["name"] for c in rep["per_class"]][:3] == ["sky", "building", "pole"]
    assert set(rep["per_class"][0]) >= {"name", "iou", "dice", "accuracy", "support"}
    cm = np.array(rep["confusion_matrix"])
    assert cm.shape == (11, 11) and cm.sum() == sum(c["support"] for c in rep["per_class"])
    assert (tmp_path / "report_confusion.png").is_file()
    assert "mIoU" in r.stdout

    # predict: a file, a folder with a broken image, a missing path
    images = tmp_path / "in"
    images.mkdir()
    src = sorted((CAMVID / "test").iterdir())[:2]
    for s in src:
        (images / s.name).write_bytes(s.read_bytes())
    (images / "broken.png").write_bytes(b"not an image")
    pred = tmp_path / "pred"
    r = run(
        "predict",
        str(images),
        str(tmp_path / "missing.png"),
        "--model",
        str(out / "best.ckpt"),
        "--out",
        str(pred),
        "--probs",
        "--quiet",
    )
    assert r.returncode == 1  # some inputs failed, the rest were written
    assert "broken.png" in r.stderr and "missing.png" in r.stderr
    for s in src:
        mask = Image.open(pred / s.name)
        assert mask.mode == "P" and mask.size == (480, 360)
        assert mask.getpalette()[:6] == [128, 128, 128, 128, 0, 0]  # sky, building colours
        assert np.array(mask).max() < 11
        assert (pred / f"{s.stem}_overlay.png").is_file()
        probs = np.load(pred / f"{s.stem}_probs.npy")
        assert probs.shape == (11, 360, 480)
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
        assert (probs.argmax(axis=0) == np.array(mask)).mean() > 0.999
    assert not (pred / "broken.png").exists()

    # resume continues from last.ckpt; a second plain run refuses to overwrite
    r = run("train", "configs/smoke.yaml", "--out", str(out), "--quiet")
    assert r.returncode == 2 and "--resume" in r.stderr
