"""Evaluation: one confusion matrix over a whole split, then every score from its totals."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import outputs
from .._atomic import write_text_atomic
from ..data import SameSizeBatchSampler, SegmentationDataset, build_eval_transform, check_dataset
from ..data.classes import IGNORE_INDEX
from ..data.spec import DatasetSpec
from ..errors import PixelwiseError
from ..metrics import ConfusionMatrix, SegmentationScores
from .bundle import AMP_TOLERANCE, INFERENCE_AMPS
from .distributed import DistContext, current_context, reduce_confusion, shard_batches
from .predictor import Segmenter
from .visualize import plot_confusion

__all__ = [
    "EvalResult",
    "check_amp",
    "confusion_over",
    "eval_loader",
    "evaluate",
    "report_dict",
    "write_report",
]


@dataclass
class EvalResult:
    """A split's confusion matrix and the scores derived from it; ``crf``: the dense CRF's
    parameters when predictions were refined by it, else ``None``; ``tta``: the test-time
    augmentation, if any; ``tiling``: whole image or sliding windows; ``amp``: the autocast the
    forward pass ran under (``off``: float32)."""

    confusion: ConfusionMatrix
    scores: SegmentationScores
    class_names: list[str]
    split: str
    dataset: str
    num_images: int
    seconds: float
    crf: dict | None = None
    tta: dict | None = None
    tiling: dict | None = None
    amp: str = "off"


def eval_loader(
    spec: DatasetSpec,
    split: str,
    mean,
    std,
    *,
    batch_size: int,
    num_workers: int,  # noqa: ANN001
    raw_images: bool = False,
    shard: DistContext | None = None,
) -> DataLoader:
    """Unaugmented loader whose batches hold same-size images only (with ``raw_images``, each batch
    also holds ``raw``: the uint8 N×H×W×C images, for the dense CRF). With ``shard``, only this
    process's share of the batches (every image in exactly one process, in the batch one process
    would give it); ``loader.dataset`` is still the whole split."""
    ds = SegmentationDataset(
        spec, split, build_eval_transform(mean=mean, std=std), raw_images=raw_images
    )
    batches = SameSizeBatchSampler(ds.samples, batch_size)
    return DataLoader(
        ds,
        batch_sampler=batches if shard is None else shard_batches(list(batches), shard),
        num_workers=num_workers,
    )


def confusion_over(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    num_classes: int,
    *,
    threshold: float = 0.5,
    progress: bool = True,
    desc: str = "evaluate",
    labels_fn: Callable[[torch.Tensor, dict], torch.Tensor] | None = None,
) -> ConfusionMatrix:
    """Accumulate the confusion matrix of the labels of ``logits_fn(images)`` against the masks.

    Labels come from :func:`pixelwise.outputs.labels` (argmax, or ``σ > threshold`` for one-channel
    sigmoid logits), or from ``labels_fn(logits, batch)`` when given (e.g. the dense CRF, which
    reads ``batch["raw"]``).
    """
    cm = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
        logits = logits_fn(batch["image"])
        if labels_fn is None:
            pred = outputs.labels(logits, threshold)
        else:
            pred = labels_fn(logits, batch)
        cm.update(pred.cpu(), batch["mask"])
    return cm


def evaluate(
    segmenter: Segmenter,
    spec: DatasetSpec,
    split: str = "test",
    *,
    batch_size: int = 4,
    num_workers: int = 2,
    progress: bool = True,
) -> EvalResult:
    """Score ``segmenter`` on a labelled split (checked for bad data first). Its predictions are
    what :meth:`Segmenter.decide` ships: with its test-time augmentation and tiling, refined by the
    dense CRF when ``segmenter.crf`` is set."""
    if spec.num_classes != segmenter.meta.num_classes:
        raise PixelwiseError(
            f"model has {segmenter.meta.num_classes} classes but dataset {spec.source} has "
            f"{spec.num_classes}"
        )
    check_dataset(spec, [split])
    ctx = current_context()  # under torchrun: this process scores its share, the totals are summed
    loader = eval_loader(
        spec,
        split,
        segmenter.meta.mean,
        segmenter.meta.std,
        batch_size=batch_size,
        num_workers=num_workers,
        raw_images=segmenter.crf is not None,
        shard=ctx if ctx.enabled else None,
    )
    if any(s.mask is None for s in loader.dataset.samples):  # type: ignore[attr-defined]
        raise PixelwiseError(f"split {split!r} of {spec.source} has images without masks")

    def crf_labels(logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return segmenter.decide(logits, batch["raw"])[1]

    t0 = time.perf_counter()
    cm = confusion_over(
        segmenter.logits,
        loader,
        spec.num_classes,
        threshold=segmenter.meta.threshold,
        progress=progress,
        labels_fn=None if segmenter.crf is None else crf_labels,
    )
    cm = reduce_confusion(cm)
    return EvalResult(
        confusion=cm,
        scores=cm.scores(),
        class_names=spec.class_names,
        split=split,
        dataset=spec.name,
        num_images=len(loader.dataset),  # type: ignore[arg-type]
        seconds=time.perf_counter() - t0,
        crf=None if segmenter.crf is None else asdict(segmenter.crf.params),
        tta=None if segmenter.tta is None else asdict(segmenter.tta),
        tiling=asdict(segmenter.tiling),
        amp=segmenter.amp,
    )


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def report_dict(result: EvalResult) -> dict:
    """The JSON report: top-level means, a ``per_class`` list, and the raw confusion matrix."""
    s = result.scores
    return {
        "dataset": result.dataset,
        "split": result.split,
        "num_images": result.num_images,
        "miou": _num(s.miou),
        "pixel_accuracy": _num(s.pixel_accuracy),
        "mean_accuracy": _num(s.mean_accuracy),
        "fw_iou": _num(s.fw_iou),
        "mean_dice": _num(s.mean_dice),
        "per_class": [
            {
                "name": name,
                "iou": _num(s.iou[i]),
                "dice": _num(s.dice[i]),
                "accuracy": _num(s.accuracy[i]),
                "support": int(s.support[i]),
                "present": bool(s.present[i]),
            }
            for i, name in enumerate(result.class_names)
        ],
        "confusion_matrix": result.confusion.matrix.tolist(),
        "crf": result.crf,
        "tta": result.tta,
        "tiling": result.tiling,
        "amp": result.amp,
        "seconds": round(result.seconds, 3),
    }


def write_report(result: EvalResult, path: str | os.PathLike[str]) -> Path:
    """Write the JSON report and ``<stem>_confusion.png`` beside it; return the PNG's path."""
    path = Path(path)
    write_text_atomic(path, json.dumps(report_dict(result), indent=2) + "\n")
    png = path.with_name(path.stem + "_confusion.png")
    plot_confusion(result.confusion.matrix.numpy().astype(np.int64), result.class_names, png)
    return png


def check_amp(
    segmenter: Segmenter,
    amp: str,
    spec: DatasetSpec,
    split: str = "test",
    *,
    batch_size: int = 4,
    num_workers: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """Score a model on a labelled split in float32 and under ``amp`` — the same segmenter with only
    its precision changed — giving the ``check`` a bundle's ``inference`` block records
    (:func:`~pixelwise.engine.bundle.write_bundle`).

    Raises:
        PixelwiseError: ``amp`` is not one a bundle records, or its mIoU is more than
            :data:`~pixelwise.engine.bundle.AMP_TOLERANCE` (0.1 point) below float32's.
    """
    if amp not in INFERENCE_AMPS:
        raise PixelwiseError(f"amp {amp!r}: a bundle records only {', '.join(INFERENCE_AMPS)}")
    miou: dict[str, float] = {}
    images = 0
    for precision in ("off", amp):
        seg = segmenter.with_config(dataclasses.replace(segmenter.config, amp=precision))
        result = evaluate(
            seg, spec, split, batch_size=batch_size, num_workers=num_workers, progress=progress
        )
        miou[precision], images = float(result.scores.miou), result.num_images
    if miou[amp] < miou["off"] - AMP_TOLERANCE:
        raise PixelwiseError(
            f"{segmenter.loaded.source or 'model'}: mIoU {100 * miou[amp]:.2f} under {amp} against "
            f"{100 * miou['off']:.2f} in float32 on {spec.name}/{split}, more than "
            f"{100 * AMP_TOLERANCE:.1f} point lower; keep float32 (no --amp)"
        )
    return {
        "data": spec.name,
        "split": split,
        "images": images,
        "device": str(segmenter.device),
        "miou_float32": round(miou["off"], 6),
        "miou_amp": round(miou[amp], 6),
    }
