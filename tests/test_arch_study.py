"""bench/arch_study.py with a tiny budget on synthetic data and three architectures: every run trains and
is scored, the report carries measured parameters and GFLOPs, the plot is written, and a second
invocation resumes instead of redoing finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_bench_module, study_dataset

from pixelwise.engine.complexity import model_complexity

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ["fcn32s", "unet", "deeplabv3plus"]


@pytest.mark.slow
def test_arch_study_tiny_budget(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(ROOT / "bench")  # as when run as python bench/arch_study.py
    study = load_bench_module("arch_study")
    assert set(study.ARCHS) == {
        p.stem.removeprefix("camvid_") for p in (ROOT / "configs").glob("camvid_*.yaml")
    }
    data = study_dataset(tmp_path / "data")
    out, report, png = tmp_path / "runs", tmp_path / "study.md", tmp_path / "study.png"
    argv = [
        "--epochs", "1", "--crop", "12", "--max-steps", "1", "--batch-size", "2",
        "--archs", *ARCHS,
        "--set", f"data.dataset={data}",
        "--set", "model.params.encoder_weights=null",  # no ImageNet files needed; unet drops it
        "--set", "train.eval_batch_size=2",
        "--workers", "0", "--amp", "off", "--device", "cpu",
        "--out", str(out), "--report", str(report), "--plot", str(png),
    ]  # fmt: skip
    assert study.main([*argv, "--keep-last"]) == 0
    runs = sorted(p.parent.name for p in out.glob("*/*/eval.json"))
    assert runs == sorted(f"camvid_{a}" for a in ARCHS)
    budget = next(out.iterdir())
    assert budget.name.startswith("e1_c12_s1_b2_")
    rep = json.loads((budget / "camvid_deeplabv3plus" / "eval.json").read_text())
    assert rep["split"] == "test" and rep["study"]["steps"] == 1
    assert rep["study"]["arch"] == "deeplabv3plus"
    assert rep["study"]["recipe"] == "configs/camvid_deeplabv3plus.yaml"

    text = report.read_text()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| architecture |"))
    assert header.startswith(
        "| architecture | encoder | output stride | params (M) | GFLOPs 360×480 | mIoU "
        "| pole | sign | pedestrian | road | steps | train min |"
    )
    # parameters and GFLOPs are measured, for the model that was trained (4 classes here)
    c = model_complexity("fcn32s", size=(360, 480), num_classes=4, encoder="tf_efficientnet_lite0")
    fcn = next(line for line in lines if line.startswith("| FCN-32s |"))
    assert f"| 32 | {c.params / 1e6:.2f} | {c.gflops:.1f} | **" in fcn
    unet = next(line for line in lines if line.startswith("| U-Net (original, from scratch) |"))
    assert "| own, from scratch | 16 |" in unet
    assert (
        "from scratch" in text and "tf_efficientnet_lite0" in text
    )  # the intro says which is which
    assert text.count(" | **") == len(ARCHS) and "| PSPNet |" not in text  # only the chosen ones
    assert png.is_file() and png.stat().st_size > 1000

    # --list shows each run's state; a second invocation skips finished runs and resumes the other
    (budget / "camvid_fcn32s" / "eval.json").unlink()
    capsys.readouterr()
    assert study.main([*argv, "--list"]) == 0
    listed = capsys.readouterr().out
    assert "camvid_fcn32s [resumable]: camvid_fcn32s.yaml" in listed
    assert "camvid_unet [done]" in listed
    mtime = (budget / "camvid_unet" / "eval.json").stat().st_mtime_ns
    assert study.main(argv) == 0
    assert (budget / "camvid_unet" / "eval.json").stat().st_mtime_ns == mtime
    again = json.loads((budget / "camvid_fcn32s" / "eval.json").read_text())
    assert again["study"]["steps"] == 1 and not (budget / "camvid_fcn32s" / "last.ckpt").exists()
    assert "| FCN-32s | tf_efficientnet_lite0, from scratch | 32 |" in report.read_text()
