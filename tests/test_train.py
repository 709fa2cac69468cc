"""Training engine: exact resume, schedules, outputs — on a tiny synthetic dataset."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
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


# ---- the step functions, each alone ----------------------------------------------------------


def test_setup_builds_the_state_and_writes_nothing(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    state = train_mod.setup(_cfg(data, monitor="iou:class_1"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    assert (state.epoch, state.step, state.best_epoch, state.rows) == (0, 0, None, [])
    assert state.per_rank == 8 and state.val_loader is not None
    assert (state.monitor.score, state.monitor.class_index) == ("iou", 1)
    names = [type(c).__name__ for c in state.callbacks.callbacks]
    assert names == ["ProgressLogger", "MetricsWriter", "CurvesPlotter"]


def test_train_one_epoch_takes_its_steps_and_returns_its_row(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    state = train_mod.setup(_cfg(data), tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in state.net.state_dict().items()}
    row = train_mod.train_one_epoch(state)
    assert (state.epoch, state.step) == (1, 2)  # 8 images, batch 4
    assert row["epoch"] == 1 and row["step"] == 2 and row["val_miou"] == ""
    assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
    assert row["lr"] == pytest.approx(0.01)  # end of warm-up (2 steps)
    assert any(not torch.equal(before[k], v) for k, v in state.net.state_dict().items())
    state.cfg.train.max_steps = 3
    train_mod.train_one_epoch(state)
    assert (state.epoch, state.step) == (2, 3)  # stopped inside the epoch at max_steps


def test_validate_scores_the_whole_split_and_keeps_samples(tmp_path: Path) -> None:
    from PIL import Image

    data = _toy_dataset(tmp_path / "data")
    state = train_mod.setup(_cfg(data), tmp_path / "run", progress=False)
    result = train_mod.validate(state, samples=3)
    assert result.scores.support.sum() == 8 * 32 * 32  # every pixel of the split, once
    assert len(result.samples) == 3
    first = result.samples[0]
    assert first.image.dtype == np.uint8 and first.image.shape == (32, 32, 3)
    assert first.prediction.shape == first.mask.shape == (32, 32)
    path = state.val_loader.dataset.samples[0]
    original = np.asarray(Image.open(path.image))
    assert np.abs(first.image.astype(int) - original).max() <= 1  # de-normalised
    assert np.array_equal(first.mask, np.asarray(Image.open(path.mask)))
    assert train_mod.validate(state).samples == []


def test_checkpoints_and_resume_from_continue_the_same_run(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    cfg = _cfg(data)
    a = train_mod.setup(cfg, tmp_path / "run", progress=False)
    train_mod.write_run_files(a, resumed=False)
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"config.yaml", "manifest.json"}
    train_mod.train_one_epoch(a)
    a.rows.append({"epoch": 1})
    path = train_mod.write_checkpoint(a, "last")
    assert path == tmp_path / "run" / "last.ckpt" and not a.best_path.exists()
    best = load_checkpoint(train_mod.write_checkpoint(a, "best"))
    assert "train_state" not in best and best["epoch"] == 1
    st = load_checkpoint(path)["train_state"]
    assert (st["epoch"], st["step"], st["monitor"], st["metrics"]) == (1, 2, "miou", [{"epoch": 1}])

    b = train_mod.setup(cfg, tmp_path / "run", progress=False)
    train_mod.resume_from(b, path)
    assert (b.epoch, b.start_epoch, b.step, b.rows) == (1, 1, 2, [{"epoch": 1}])
    row_a, row_b = train_mod.train_one_epoch(a), train_mod.train_one_epoch(b)
    assert row_a["train_loss"] == row_b["train_loss"]  # same data order, same weights
    for k, v in a.net.state_dict().items():
        assert torch.equal(v, b.net.state_dict()[k]), k
