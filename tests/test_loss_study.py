"""bench/loss_study.py with a tiny budget on synthetic data: every run trains and is scored, the report
and plot are written, and a second invocation resumes instead of redoing finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_bench_module, study_dataset

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_loss_study_tiny_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(ROOT / "bench")  # as when run as python bench/loss_study.py
    study = load_bench_module("loss_study")
    data = study_dataset(tmp_path / "data")
    out, report, png = tmp_path / "runs", tmp_path / "study.md", tmp_path / "study.png"
    argv = [
        "--epochs", "1", "--crop", "12", "--max-steps", "1", "--batch-size", "2",
        "--set", f"data.dataset={data}",
        "--set", "model.name=unet",  # a tiny U-Net for both datasets (CamVid's recipe is FCN-8s)
        "--set", "model.params={base_channels: 4, depth: 2}",
        "--set", "train.eval_batch_size=2",
        "--workers", "0", "--amp", "off", "--device", "cpu",
        "--out", str(out), "--report", str(report), "--plot", str(png),
    ]  # fmt: skip
    assert study.main([*argv, "--keep-last"]) == 0
    runs = sorted(p.parent.name for p in out.glob("*/*/eval.json"))
    assert runs == sorted(f"{d}_{loss}" for d in study.STUDIES for loss in study.LOSSES)
    budget = next(out.iterdir())
    assert budget.name.startswith("e1_c12_s1_b2_")
    rep = json.loads((budget / "camvid_wce" / "eval.json").read_text())
    assert rep["split"] == "test" and rep["study"]["steps"] == 1
    assert "loss.class_weights=median_frequency" in rep["study"]["overrides"]
    assert json.loads((budget / "membrane_ce" / "eval.json").read_text())["split"] == "val"

    text = report.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| loss |"))
    # CamVid's small classes first in their own columns (those this toy dataset has), then the rest
    assert header.startswith("| loss | mIoU | pole | sign | pedestrian | road |")
    for label, _ in study.LOSSES.values():
        assert text.count(f"| {label} | **") == 2  # one row per dataset
    assert png.is_file() and png.stat().st_size > 1000

    # a second invocation skips finished runs and resumes an interrupted one from last.ckpt
    (budget / "camvid_focal" / "eval.json").unlink()
    mtime = (budget / "camvid_ce" / "eval.json").stat().st_mtime_ns
    assert study.main([*argv, "--datasets", "camvid"]) == 0
    assert (budget / "camvid_ce" / "eval.json").stat().st_mtime_ns == mtime
    again = json.loads((budget / "camvid_focal" / "eval.json").read_text())
    assert again["study"]["steps"] == 1 and not (budget / "camvid_focal" / "last.ckpt").exists()
    assert "| focal (γ = 2) | **" in report.read_text()
