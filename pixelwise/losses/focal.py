"""Module wrapper for :func:`~pixelwise.losses.functional.focal_loss` (Lin et al., ICCV 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import WeightedLoss
from .functional import focal_loss

__all__ = ["FocalLoss"]


class FocalLoss(WeightedLoss):
    """Focal loss: ``-alpha(y) (1 - p_y)^gamma log p_y``, averaged over non-ignored pixels."""

    function = staticmethod(focal_loss)

    def __init__(
        self,
        *,
        weight: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = 255,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__(weight=weight, ignore_index=ignore_index)
        self.gamma = gamma
        self.alpha = alpha if alpha is None or isinstance(alpha, float | int) else list(alpha)
