"""Callbacks: what a training run does besides training, at the events of its loop.

:func:`pixelwise.engine.train.train` calls each :class:`Callback` at these events, in this order:

- ``on_train_start(state)``, once, before the first epoch (also when resuming);
- per epoch: ``on_validation(state, result)`` when the epoch was validated, then
  ``on_checkpoint(state, path, "best")`` when ``best.ckpt`` was written, ``on_epoch_end(state, row)``
  with the epoch's ``metrics.csv`` row, and ``on_checkpoint(state, path, "last")``;
- ``on_train_end(state)``, once, also when training stops on an error or Ctrl-C.

Callbacks run in every process of a distributed run (they see the same, summed scores), except those
whose ``main_process_only`` is true: those run in rank 0 alone, the process that writes files. A
callback may end training after the current epoch by setting ``state.stop_training``. Whatever it
returns from :meth:`Callback.state_dict` is saved in ``last.ckpt`` and given back to
:meth:`Callback.load_state_dict` on ``--resume``.

The built-in progress log, ``metrics.csv`` and ``curves.png`` are callbacks (:func:`default_callbacks`),
and so are early stopping and TensorBoard logging, which a recipe turns on (``train`` section).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic import write_text_atomic
from ..config import MONITOR_MEANS, MONITOR_PER_CLASS
from ..errors import PixelwiseError
from ..metrics import SegmentationScores
from .visualize import overlay_with_legend, plot_curves

if TYPE_CHECKING:
    from ..config import RunConfig
    from .train import TrainState

__all__ = [
    "METRIC_FIELDS",
    "Callback",
    "CallbackList",
    "CurvesPlotter",
    "EarlyStopping",
    "MetricsWriter",
    "Monitor",
    "ProgressLogger",
    "TensorBoardLogger",
    "ValidationResult",
    "ValidationSample",
    "default_callbacks",
]

log = logging.getLogger(__name__)

# metrics.csv's columns, in order; the last two were added later (older rows leave them empty)
METRIC_FIELDS = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "val_miou",
    "val_pixel_accuracy",
    "val_mean_accuracy",
    "epoch_seconds",
    "train_images_per_second",
    "val_mean_dice",
    "val_monitor",
]


# ---- what a callback is given ------------------------------------------------------------------


@dataclass(frozen=True)
class Monitor:
    """The validation score that picks ``best.ckpt`` and drives early stopping (``train.monitor``):
    a mean over classes or pixels (``miou``, ``mean_dice``, ``pixel_accuracy``, ``mean_accuracy``), or
    one class's IoU or Dice (``iou:<class>``, ``dice:<class>``). Higher is better."""

    name: str  # as the recipe writes it
    score: str  # the SegmentationScores field
    class_index: int | None = None  # per-class scores: the class

    @classmethod
    def parse(cls, text: str, class_names: Sequence[str]) -> Monitor:
        """``text`` (``train.monitor``) checked against the dataset's classes."""
        kind, sep, name = text.partition(":")
        if not sep and kind in MONITOR_MEANS:
            return cls(text, kind)
        if sep and kind in MONITOR_PER_CLASS:
            if name not in class_names:
                raise PixelwiseError(
                    f"train.monitor {text!r}: the dataset has no class {name!r} "
                    f"(classes: {', '.join(class_names)})"
                )
            return cls(text, kind, list(class_names).index(name))
        raise PixelwiseError(
            f"train.monitor {text!r}: use {', '.join(MONITOR_MEANS)}, iou:<class> or dice:<class>"
        )

    def value(self, scores: SegmentationScores) -> float:
        """The monitored score (NaN when a monitored class is in neither masks nor predictions)."""
        got = getattr(scores, self.score)
        return float(got if self.class_index is None else got[self.class_index])


@dataclass(frozen=True)
class ValidationSample:
    """One validation image as a callback sees it: ``image`` H×W×C uint8 (de-normalised),
    ``prediction`` and ``mask`` H×W class indices (255 in ``mask``: unlabelled)."""

    image: np.ndarray
    prediction: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class ValidationResult:
    """A validation: the scores of the whole split (summed over processes), and the first few of
    this process's images with their predictions (as many as the callbacks ask for)."""

    scores: SegmentationScores
    samples: list[ValidationSample] = field(default_factory=list)


class Callback:
    """Base class: override the events you need; each does nothing here.

    Attributes:
        main_process_only: run in rank 0 alone (callbacks that write files).
        validation_samples: how many validation images (with predictions) this callback wants in
            :attr:`ValidationResult.samples`.
    """

    main_process_only: bool = False
    validation_samples: int = 0

    def on_train_start(self, state: TrainState) -> None:
        """Before the first epoch of this process (also when resuming)."""

    def on_validation(self, state: TrainState, result: ValidationResult) -> None:
        """After the epoch ``state.epoch`` was validated; ``state.best_*`` already count it."""

    def on_checkpoint(self, state: TrainState, path: Path, kind: str) -> None:
        """After ``best.ckpt`` (``kind`` "best") or ``last.ckpt`` (``kind`` "last") was written."""

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        """After epoch ``state.epoch`` (1-based), with its ``metrics.csv`` row, before
        ``last.ckpt`` is written."""

    def on_train_end(self, state: TrainState) -> None:
        """When training ends, also on an error or Ctrl-C (close files here)."""

    def state_dict(self) -> dict[str, Any]:
        """What ``--resume`` must give back (plain numbers, strings, lists and dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (on ``--resume``)."""


class CallbackList:
    """Callbacks called in order at each event; in ranks other than 0, those that are not
    ``main_process_only`` only."""

    def __init__(self, callbacks: Sequence[Callback] = (), *, is_main: bool = True) -> None:
        self.callbacks = [c for c in callbacks if is_main or not c.main_process_only]

    @property
    def validation_samples(self) -> int:
        return max((c.validation_samples for c in self.callbacks), default=0)

    def on_train_start(self, state: TrainState) -> None:
        for c in self.callbacks:
            c.on_train_start(state)

    def on_validation(self, state: TrainState, result: ValidationResult) -> None:
        for c in self.callbacks:
            c.on_validation(state, result)

    def on_checkpoint(self, state: TrainState, path: Path, kind: str) -> None:
        for c in self.callbacks:
            c.on_checkpoint(state, path, kind)

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_epoch_end(state, row)

    def on_train_end(self, state: TrainState) -> None:
        for c in self.callbacks:
            c.on_train_end(state)

    def _keys(self) -> list[str]:
        """One key per callback for ``last.ckpt``: its class name (``Name#2`` for a second one)."""
        seen: dict[str, int] = {}
        keys = []
        for c in self.callbacks:
            name = type(c).__name__
            seen[name] = seen.get(name, 0) + 1
            keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
        return keys

    def state_dict(self) -> dict[str, dict[str, Any]]:
        pairs = zip(self._keys(), self.callbacks, strict=True)
        return {k: s for k, c in pairs if (s := c.state_dict())}

    def load_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        for key, c in zip(self._keys(), self.callbacks, strict=True):
            if key in states:
                c.load_state_dict(states[key])


# ---- the built-in callbacks ---------------------------------------------------------------------


class ProgressLogger(Callback):
    """One log line per epoch: step, loss, learning rate, throughput, time, validation score."""

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        val = ""
        if row["val_miou"] != "":
            val = f", val mIoU {100 * row['val_miou']:.2f}%"
            if state.monitor.name != "miou":
                val += f", val {state.monitor.name} {row['val_monitor']:.4f}"
        log.info(
            "epoch %d/%d: step %d, loss %.4f, lr %.2e, %.1f img/s, %.0fs%s",
            row["epoch"],
            state.cfg.train.epochs,
            state.step,
            row["train_loss"],
            row["lr"],
            row["train_images_per_second"],
            row["epoch_seconds"],
            val,
        )


class MetricsWriter(Callback):
    """``metrics.csv``: every epoch's row so far, rewritten atomically after each epoch."""

    main_process_only = True

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(state.rows)
        write_text_atomic(state.out / "metrics.csv", buf.getvalue())


class CurvesPlotter(Callback):
    """``curves.png``: training loss, learning rate and validation mIoU per epoch."""

    main_process_only = True

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        plot_curves(state.rows, state.out / "curves.png")


class EarlyStopping(Callback):
    """Stop training when ``patience`` validations in a row have not raised the monitored score
    (``state.monitor``) by more than ``min_delta`` over its best so far. A NaN score never counts
    as an improvement. Its best and count are saved in ``last.ckpt``: a resumed run goes on counting
    (and stops at once when the run it resumes had stopped early with the same patience)."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1 or min_delta < 0:
            raise PixelwiseError(
                f"early stopping needs patience >= 1 and min_delta >= 0, got {patience}, {min_delta}"
            )
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad = 0  # validations since the last improvement
        self.monitor = ""  # the monitor's name when best was recorded

    def on_train_start(self, state: TrainState) -> None:
        if self.monitor and self.monitor != state.monitor.name:
            log.warning(
                "early stopping counted %s; train.monitor is now %s: counting again",
                self.monitor,
                state.monitor.name,
            )
            self.best, self.bad = None, 0
        self.monitor = state.monitor.name
        if self.bad >= self.patience:
            self._stop(state)

    def on_validation(self, state: TrainState, result: ValidationResult) -> None:
        score = state.monitor.value(result.scores)
        if not math.isnan(score) and (self.best is None or score > self.best + self.min_delta):
            self.best, self.bad = score, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            self._stop(state)

    def _stop(self, state: TrainState) -> None:
        state.stop_training = True
        log.info(
            "early stopping: val %s has not improved on %s for %d validation(s) (epoch %d)",
            self.monitor,
            "—" if self.best is None else f"{self.best:.4f}",
            self.bad,
            state.epoch,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad, "monitor": self.monitor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad, self.monitor = state["best"], state["bad"], state["monitor"]


class TensorBoardLogger(Callback):
    """TensorBoard event files in ``<out>/tensorboard``, by epoch: training loss and learning rate;
    validation mIoU, pixel and mean accuracy, mean Dice, the monitored score and each class's IoU;
    ``samples`` validation images overlaid with their predictions (and, once, their masks).

    Needs the ``tensorboard`` package (``pip install 'pixelwise[tensorboard]'``).
    """

    main_process_only = True

    def __init__(self, samples: int = 4) -> None:
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard's backend)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise PixelwiseError(
                "train.tensorboard needs the tensorboard package: "
                "pip install 'pixelwise[tensorboard]'"
            ) from None
        self._writer_type = SummaryWriter
        self.writer: Any = None
        self.validation_samples = samples
        self._masks_shown = False

    def on_train_start(self, state: TrainState) -> None:
        self.writer = self._writer_type(log_dir=str(state.out / "tensorboard"))

    def on_validation(self, state: TrainState, result: ValidationResult) -> None:
        w, epoch, s = self.writer, state.epoch, result.scores
        for name in MONITOR_MEANS:
            w.add_scalar(f"val/{name}", getattr(s, name), epoch)
        if state.monitor.name not in MONITOR_MEANS:
            w.add_scalar(f"val/{state.monitor.name}", state.monitor.value(s), epoch)
        for name, iou in zip(state.meta.class_names, s.iou, strict=True):
            if not math.isnan(iou):
                w.add_scalar(f"val_iou/{name}", iou, epoch)
        colors, names = state.meta.colors, state.meta.class_names
        for i, sample in enumerate(result.samples):
            pred = overlay_with_legend(sample.image, sample.prediction, colors, names)
            w.add_image(f"val_overlay/{i}", np.asarray(pred), epoch, dataformats="HWC")
            if not self._masks_shown:
                truth = overlay_with_legend(sample.image, sample.mask, colors, names)
                w.add_image(f"val_mask/{i}", np.asarray(truth), epoch, dataformats="HWC")
        self._masks_shown = self._masks_shown or bool(result.samples)

    def on_epoch_end(self, state: TrainState, row: dict[str, Any]) -> None:
        self.writer.add_scalar("train/loss", row["train_loss"], state.epoch)
        self.writer.add_scalar("train/lr", row["lr"], state.epoch)
        self.writer.flush()

    def on_train_end(self, state: TrainState) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def default_callbacks(cfg: RunConfig) -> list[Callback]:
    """The callbacks a recipe asks for: the progress log, ``metrics.csv`` and ``curves.png`` always;
    early stopping (``train.early_stopping_patience``) and TensorBoard (``train.tensorboard``)."""
    tc = cfg.train
    callbacks: list[Callback] = [ProgressLogger(), MetricsWriter(), CurvesPlotter()]
    if tc.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(tc.early_stopping_patience, tc.early_stopping_min_delta))
    if tc.tensorboard:
        callbacks.append(TensorBoardLogger())
    return callbacks
