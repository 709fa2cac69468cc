"""Module wrapper for :func:`~pixelwise.losses.functional.dice_loss` (soft Dice, softmax or sigmoid)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import WeightedLoss
from .functional import dice_loss

__all__ = ["DiceLoss"]


class DiceLoss(WeightedLoss):
    """Soft Dice loss: ``1 - mean_c D_c`` over non-ignored pixels, per batch or per image."""

    function = staticmethod(dice_loss)

    def __init__(
        self,
        *,
        weight: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = 255,
        smooth: float = 1.0,
        include_background: bool = True,
        per_image: bool = False,
        squared: bool = False,
    ) -> None:
        super().__init__(weight=weight, ignore_index=ignore_index)
        self.smooth = smooth
        self.include_background = include_background
        self.per_image = per_image
        self.squared = squared
