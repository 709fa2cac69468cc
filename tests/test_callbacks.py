"""Training callbacks: the events in order, early stopping, best.ckpt by a chosen metric, their state
across --resume, and TensorBoard event files — on a tiny synthetic dataset.

Where a test needs validation scores it can check by hand, ``train.validate`` is replaced by a table
of scores per epoch (the model still trains; only what validation reports is fixed).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from helpers import toy_dataset

from pixelwise.config import RunConfig, load_config
from pixelwise.engine import load_checkpoint, train
from pixelwise.engine.callbacks import Callback, EarlyStopping, Monitor, ValidationResult
from pixelwise.errors import PixelwiseError
from pixelwise.metrics import SegmentationScores

train_mod = importlib.import_module("pixelwise.engine.train")  # the module, not the function

CLASSES = ["class_0", "class_1", "class_2"]  # toy_dataset's


def _recipe(dataset: Path, **train_kw: object) -> dict:
    return {
        "data": {"dataset": str(dataset), "train_split": "all", "val_split": "all"},
        "model": {"name": "unet", "params": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [16, 16]},
        "train": {"batch_size": 4, "num_workers": 0, "amp": "off", **train_kw},
    }


def _scores(
    miou: float = 0.5,
    mean_dice: float = 0.5,
    iou: tuple[float, float, float] = (0.5, 0.5, 0.5),
    dice: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> SegmentationScores:
    return SegmentationScores(
        iou=np.array(iou),
        dice=np.array(dice),
        accuracy=np.full(3, 0.5),
        support=np.ones(3, np.int64),
        present=np.ones(3, bool),
        miou=miou,
        pixel_accuracy=0.5,
        mean_accuracy=0.5,
        fw_iou=0.5,
        mean_dice=mean_dice,
    )


def _fixed_validation(
    monkeypatch: pytest.MonkeyPatch, table: dict[int, SegmentationScores]
) -> None:
    """Validation of epoch ``e`` (1-based) reports ``table[e]``."""

    def validate(state, *, samples: int = 0) -> ValidationResult:  # noqa: ANN001
        return ValidationResult(table[state.epoch])

    monkeypatch.setattr(train_mod, "validate", validate)


def _fixed_miou(monkeypatch: pytest.MonkeyPatch, mious: list[float]) -> None:
    _fixed_validation(monkeypatch, {e: _scores(miou=m) for e, m in enumerate(mious, 1)})


class Recorder(Callback):
    """Writes down every event with the epoch it saw."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_train_start(self, state) -> None:  # noqa: ANN001
        self.events.append(("train_start", state.epoch))

    def on_validation(self, state, result) -> None:  # noqa: ANN001
        self.events.append(("validation", state.epoch, state.best_epoch))

    def on_checkpoint(self, state, path, kind) -> None:  # noqa: ANN001
        assert path.is_file() and path.name == f"{kind}.ckpt"
        self.events.append(("checkpoint", kind, state.epoch))

    def on_epoch_end(self, state, row) -> None:  # noqa: ANN001
        assert state.rows[-1] is row and "epoch_seconds" in row
        self.events.append(("epoch_end", row["epoch"]))

    def on_train_end(self, state) -> None:  # noqa: ANN001
        self.events.append(("train_end", state.epoch))


# ---- the interface -------------------------------------------------------------------------------


def test_a_callback_sees_the_events_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = toy_dataset(tmp_path / "data")
    _fixed_miou(monkeypatch, [0.1, 0.2, 0.3])
    rec = Recorder()
    cfg = RunConfig(**_recipe(data, epochs=3, val_every=2))
    train(cfg, tmp_path / "run", progress=False, callbacks=[rec])
    assert rec.events == [
        ("train_start", 0),
        ("epoch_end", 1),  # epoch 1: not validated (val_every 2)
        ("checkpoint", "last", 1),
        ("validation", 2, 2),  # the best already counts this validation
        ("checkpoint", "best", 2),
        ("epoch_end", 2),
        ("checkpoint", "last", 2),
        ("validation", 3, 3),  # the last epoch is always validated
        ("checkpoint", "best", 3),
        ("epoch_end", 3),
        ("checkpoint", "last", 3),
        ("train_end", 3),
    ]


def test_a_callback_can_stop_training(tmp_path: Path) -> None:
    class StopAfterTwo(Callback):
        def on_epoch_end(self, state, row) -> None:  # noqa: ANN001
            state.stop_training = state.epoch == 2

    data = toy_dataset(tmp_path / "data")
    res = train(
        RunConfig(**_recipe(data, epochs=5)),
        tmp_path / "run",
        progress=False,
        callbacks=[StopAfterTwo()],
    )
    assert (res.epochs_run, res.stopped_early) == (2, True)
    assert load_checkpoint(tmp_path / "run" / "last.ckpt")["epoch"] == 2


# ---- early stopping ------------------------------------------------------------------------------


def test_early_stopping_counts_validations_without_improvement() -> None:
    stopper = EarlyStopping(patience=2, min_delta=0.05)
    state = SimpleNamespace(monitor=Monitor("miou", "miou"), stop_training=False, epoch=0)
    stopper.on_train_start(state)
    for miou, bad in [(0.5, 0), (0.54, 1), (0.6, 0), (float("nan"), 1), (0.62, 2)]:
        assert not state.stop_training
        state.epoch += 1
        stopper.on_validation(state, ValidationResult(_scores(miou=miou)))
        assert stopper.bad == bad
    assert state.stop_training
    assert stopper.state_dict() == {"best": 0.6, "bad": 2, "monitor": "miou"}


def test_early_stopping_stops_at_the_right_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # min_delta 0.06: epoch 2 improves on 0.50, epochs 3 and 4 do not improve on 0.60 by more
    _fixed_miou(monkeypatch, [0.50, 0.60, 0.65, 0.62, 0.90, 0.90])
    data = toy_dataset(tmp_path / "data")
    cfg = RunConfig(
        **_recipe(data, epochs=6, early_stopping_patience=2, early_stopping_min_delta=0.06)
    )
    res = train(cfg, tmp_path / "run", progress=False)
    assert (res.epochs_run, res.stopped_early) == (4, True)
    assert res.best_epoch == 3 and res.best_miou == pytest.approx(0.65)  # best.ckpt: no min_delta
    assert load_checkpoint(tmp_path / "run" / "best.ckpt")["epoch"] == 3
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4


def test_resume_keeps_the_early_stopping_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class KilledAfterEpoch2(Callback):
        def on_checkpoint(self, state, path, kind) -> None:  # noqa: ANN001
            if kind == "last" and state.epoch == 2:
                raise KeyboardInterrupt

    _fixed_miou(monkeypatch, [0.5, 0.4, 0.4, 0.4, 0.4])
    data = toy_dataset(tmp_path / "data")
    cfg = RunConfig(**_recipe(data, epochs=5, early_stopping_patience=2))
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, progress=False, callbacks=[KilledAfterEpoch2()])
    st = load_checkpoint(out / "last.ckpt")["train_state"]
    assert st["callbacks"] == {"EarlyStopping": {"best": 0.5, "bad": 1, "monitor": "miou"}}
    res = train(cfg, out, resume=True, progress=False)
    assert (res.epochs_run, res.stopped_early) == (1, True)  # epoch 3: the second bad validation
    again = train(cfg, out, resume=True, progress=False)  # stopped early: nothing more to do
    assert (again.epochs_run, again.stopped_early) == (0, True)


# ---- best.ckpt by a chosen metric ----------------------------------------------------------------

# each score peaks at a different epoch
TABLE = {
    1: _scores(miou=0.40, mean_dice=0.50, iou=(0.4, 0.3, 0.9), dice=(0.5, 0.4, 0.9)),
    2: _scores(miou=0.60, mean_dice=0.55, iou=(0.6, 0.5, 0.7), dice=(0.7, 0.6, 0.8)),
    3: _scores(miou=0.50, mean_dice=0.70, iou=(0.5, 0.6, 0.4), dice=(0.8, 0.9, 0.5)),
}


@pytest.mark.parametrize(
    ("monitor", "epoch", "score"),
    [("miou", 2, 0.60), ("mean_dice", 3, 0.70), ("iou:class_2", 1, 0.9), ("dice:class_1", 3, 0.9)],
)
def test_best_checkpoint_follows_the_monitored_metric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, monitor: str, epoch: int, score: float
) -> None:
    _fixed_validation(monkeypatch, TABLE)
    data = toy_dataset(tmp_path / "data")
    cfg = RunConfig(**_recipe(data, epochs=3, monitor=monitor))
    res = train(cfg, tmp_path / "run", progress=False)
    assert (res.monitor, res.best_epoch) == (monitor, epoch)
    assert res.best_score == pytest.approx(score)
    assert res.best_miou == pytest.approx(TABLE[epoch].miou)  # best.ckpt's mIoU
    assert load_checkpoint(tmp_path / "run" / "best.ckpt")["epoch"] == epoch
    header, *rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    col = header.split(",").index("val_monitor")
    assert header.startswith("epoch,step,lr,train_loss,val_miou,val_pixel_accuracy,")
    best_row = max(rows, key=lambda r: float(r.split(",")[col]))
    assert best_row.split(",")[0] == str(epoch)


def test_a_changed_monitor_on_resume_starts_a_new_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fixed_validation(monkeypatch, TABLE)
    data = toy_dataset(tmp_path / "data")
    train(RunConfig(**_recipe(data, epochs=2)), tmp_path / "run", progress=False)
    cfg = RunConfig(**_recipe(data, epochs=3, monitor="iou:class_1"))
    res = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert (res.best_epoch, res.best_score) == (3, pytest.approx(0.6))


# ---- TensorBoard ---------------------------------------------------------------------------------


def test_tensorboard_event_files_hold_scalars_and_images(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = toy_dataset(tmp_path / "data")
    out = tmp_path / "run"
    train(RunConfig(**_recipe(data, epochs=2, tensorboard=True)), out, progress=False)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    expected = {"train/loss", "train/lr", "val/miou", "val/pixel_accuracy", "val/mean_accuracy"}
    expected |= {"val/mean_dice", *(f"val_iou/{c}" for c in CLASSES)}
    assert expected <= set(tags["scalars"])
    assert {f"val_overlay/{i}" for i in range(4)} <= set(tags["images"])
    assert {f"val_mask/{i}" for i in range(4)} <= set(tags["images"])
    miou = events.Scalars("val/miou")
    assert [e.step for e in miou] == [1, 2]
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    col = header.split(",").index("val_miou")
    assert [e.value for e in miou] == pytest.approx([float(r.split(",")[col]) for r in rows])
    assert len(events.Images("val_overlay/0")) == 2 and len(events.Images("val_mask/0")) == 1


def test_tensorboard_missing_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    data = toy_dataset(tmp_path / "data")
    with pytest.raises(PixelwiseError, match=r"pip install 'pixelwise\[tensorboard\]'") as info:
        train(RunConfig(**_recipe(data, tensorboard=True)), tmp_path / "run", progress=False)
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


# ---- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.monitor=f1", "train.monitor: Value error, unknown monitor 'f1'"),
        ("train.monitor=iou:", "unknown monitor {'iou': None}"),  # YAML: a mapping
        ("train.early_stopping_patience=0", "train.early_stopping_patience"),
        ("train.early_stopping_min_delta=-0.1", "train.early_stopping_min_delta"),
        ("train.tensorboard=maybe", "train.tensorboard"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, override: str, needle: str) -> None:
    recipe = tmp_path / "run.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tmp_path)))
    with pytest.raises(PixelwiseError, match="run.yaml") as info:
        load_config(recipe, [override])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_settings_from_the_command_line(tmp_path: Path) -> None:
    recipe = tmp_path / "run.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tmp_path)))
    sets = ["train.tensorboard=true", "train.monitor=dice:road", "train.early_stopping_patience=3"]
    tc = load_config(recipe, sets).train
    assert (tc.tensorboard, tc.monitor, tc.early_stopping_patience) == (True, "dice:road", 3)
    assert tc.early_stopping_min_delta == 0.0


@pytest.mark.parametrize(
    ("train_kw", "data_kw", "needle"),
    [
        ({"monitor": "iou:sky"}, {}, "no class 'sky' (classes: class_0, class_1, class_2)"),
        ({"early_stopping_patience": 2}, {"val_split": None}, "needs a validation split"),
    ],
)
def test_settings_checked_against_the_run(
    tmp_path: Path, train_kw: dict, data_kw: dict, needle: str
) -> None:
    raw = _recipe(toy_dataset(tmp_path / "data"), **train_kw)
    raw["data"].update(data_kw)
    with pytest.raises(PixelwiseError, match="train.") as info:
        train(RunConfig(**raw), tmp_path / "run", progress=False)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()
