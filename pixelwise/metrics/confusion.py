"""One confusion matrix, accumulated over a whole split; every score is derived from its totals.

Rows are ground truth, columns are predictions. Pixels whose target equals ``ignore_index`` never count.
A class absent from both ground truth and prediction has an undefined IoU: it is reported as absent
(NaN) and left out of every mean. Because only integer totals are accumulated, scores cannot depend on
batch size or on the order of the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import PixelwiseError

__all__ = ["ConfusionMatrix", "SegmentationScores"]


@dataclass(frozen=True)
class SegmentationScores:
    """Scores derived from a confusion matrix. Per-class arrays hold NaN where undefined."""

    iou: np.ndarray
    dice: np.ndarray
    accuracy: np.ndarray  # per-class recall: TP / ground-truth pixels
    support: np.ndarray  # ground-truth pixels per class
    present: np.ndarray  # class occurs in ground truth or prediction
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    fw_iou: float
    mean_dice: float


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


class ConfusionMatrix:
    """Accumulates an ``num_classes × num_classes`` matrix of pixel counts.

    Args:
        num_classes: number of classes; predictions and targets are class indices below it.
        ignore_index: target value that is never counted.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise PixelwiseError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Shape:
            pred, target: integer tensors of the same shape (e.g. N×H×W).
        """
        if pred.shape != target.shape:
            raise PixelwiseError(
                f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
            )
        n = self.num_classes
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).long()
        valid = target != self.ignore_index
        pred, target = pred[valid], target[valid]
        bad = (target < 0) | (target >= n) | (pred < 0) | (pred >= n)
        if bool(bad.any()):
            raise PixelwiseError(
                f"class index out of range 0..{n - 1}: targets "
                f"{torch.unique(target[bad]).tolist()}, predictions {torch.unique(pred[bad]).tolist()}"
            )
        counts = torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)
        self.matrix += counts.to(self.matrix.device, torch.int64)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix's totals (e.g. from another process)."""
        self.matrix += other.matrix.to(self.matrix.device)

    def scores(self) -> SegmentationScores:
        """All scores from the accumulated totals."""
        m = self.matrix.double().cpu().numpy()
        tp = np.diag(m)
        gt = m.sum(axis=1)
        pr = m.sum(axis=0)
        union = gt + pr - tp
        present = union > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(present, tp / union, np.nan)
            dice = np.where(present, 2 * tp / (gt + pr), np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        total = m.sum()
        freq = gt / total if total > 0 else np.zeros_like(gt)
        fw = float(np.nansum(freq * np.nan_to_num(iou))) if total > 0 else float("nan")
        return SegmentationScores(
            iou=iou,
            dice=dice,
            accuracy=acc,
            support=gt.astype(np.int64),
            present=present,
            miou=_nanmean(iou),
            pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
            mean_accuracy=_nanmean(acc),
            fw_iou=fw,
            mean_dice=_nanmean(dice),
        )
