"""Training engine: exact resume, schedules, outputs — on a tiny synthetic dataset."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch
from helpers import toy_dataset as _toy_dataset

from pixelwise.config import RunConfig
from pixelwise.engine import load_checkpoint, train
from pixelwise.engine.train import lr_factor
from pixelwise.errors import PixelwiseError

train_mod = importlib.import_module("pixelwise.engine.train")  # the module, not the function


def _cfg(dataset: Path, **train_kw) -> RunConfig:
    return RunConfig(
        data={"dataset": str(dataset), "train_split": "all", "val_split": "all"},
        model={"name": "unet", "params": {"base_channels": 4, "depth": 2}},
        augment={"crop_size": [24, 24], "scale": [0.75, 1.25]},
        optim={"lr": 0.01},
        schedule={"name": "poly", "warmup_iters": 2},
        train={"epochs": 3, "batch_size": 4, "num_workers": 0, "amp": "off", "seed": 3, **train_kw},
    )


def test_resume_continues_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _toy_dataset(tmp_path / "data")
    cfg = _cfg(data)
    full = train(cfg, tmp_path / "full", progress=False)
    assert full.epochs_run == 3

    real_save = train_mod.save_checkpoint
    calls = {"last": 0}

    def interrupted_save(path, payload, **kw):  # noqa: ANN001, ANN003
        real_save(path, payload, **kw)
        if Path(path).name == "last.ckpt":
            calls["last"] += 1
            if calls["last"] == 1:
                raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(train_mod, "save_checkpoint", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "split", progress=False)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "split" / "last.ckpt")["epoch"] == 1
    resumed = train(cfg, tmp_path / "split", resume=True, progress=False)
    assert resumed.epochs_run == 2

    a = load_checkpoint(tmp_path / "full" / "last.ckpt")
    b = load_checkpoint(tmp_path / "split" / "last.ckpt")
    assert a["train_state"]["step"] == b["train_state"]["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows_a = (tmp_path / "full" / "metrics.csv").read_text().splitlines()
    rows_b = (tmp_path / "split" / "metrics.csv").read_text().splitlines()
    strip = lambda rows: [r.split(",")[:7] for r in rows]  # noqa: E731  (drop timings)
    assert strip(rows_a) == strip(rows_b)


def test_refuses_to_overwrite_and_resume_needs_a_run(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    cfg = _cfg(data, epochs=1)
    with pytest.raises(PixelwiseError, match="nothing to resume"):
        train(cfg, tmp_path / "run", resume=True, progress=False)
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(PixelwiseError, match="--resume"):
        train(cfg, tmp_path / "run", progress=False)


def test_training_learns_the_toy_task(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    cfg = _cfg(data, epochs=15)
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.best_miou is not None and res.best_miou > 0.8
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[3]) for r in rows]
    assert losses[-1] < 0.6 * losses[0]


def test_grad_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    cfg = _cfg(data, epochs=1, batch_size=2, grad_accum=2)
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.steps == 2  # 8 images / batch 2 = 4 batches = 2 optimizer steps


def test_lr_schedules() -> None:
    cfg = _cfg(Path("."))
    cfg.schedule.warmup_iters = 10
    cfg.schedule.warmup_start = 0.1
    assert lr_factor(0, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(5, 110, cfg) == pytest.approx(0.55)
    assert lr_factor(10, 110, cfg) == pytest.approx(1.0)
    assert lr_factor(60, 110, cfg) == pytest.approx(0.5**0.9)
    assert lr_factor(110, 110, cfg) == pytest.approx(0.0)
    cfg.schedule.name = "cosine"
    assert lr_factor(60, 110, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    cfg.schedule.min_lr_ratio = 0.1
    assert lr_factor(110, 110, cfg) == pytest.approx(0.1)
