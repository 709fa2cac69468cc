"""Module wrappers for :func:`~pixelwise.losses.functional.cross_entropy` and
:func:`~pixelwise.losses.functional.binary_cross_entropy`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import WeightedLoss
from .functional import binary_cross_entropy, cross_entropy

__all__ = ["CrossEntropyLoss", "BCELoss"]


class CrossEntropyLoss(WeightedLoss):
    """Pixel-wise softmax cross-entropy with class weights, ``ignore_index`` and label smoothing."""

    function = staticmethod(cross_entropy)

    def __init__(
        self,
        *,
        weight: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = 255,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight=weight, ignore_index=ignore_index)
        self.label_smoothing = label_smoothing


class BCELoss(CrossEntropyLoss):
    """Binary cross-entropy with logits for one-channel (sigmoid) models; see
    :func:`~pixelwise.losses.functional.binary_cross_entropy`."""

    function = staticmethod(binary_cross_entropy)
