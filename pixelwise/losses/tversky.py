"""Module wrappers for :func:`~pixelwise.losses.functional.tversky_loss` (Salehi et al., 2017) and
:func:`~pixelwise.losses.functional.focal_tversky_loss` (Abraham and Khan, 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import WeightedLoss
from .functional import focal_tversky_loss, tversky_loss

__all__ = ["TverskyLoss", "FocalTverskyLoss"]


class TverskyLoss(WeightedLoss):
    """Tversky loss ``(1 - T_c)^gamma``, ``T_c = TP / (TP + alpha FP + beta FN)`` (smoothed)."""

    function = staticmethod(tversky_loss)

    def __init__(
        self,
        *,
        weight: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = 255,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 1.0,
        smooth: float = 1.0,
        include_background: bool = True,
        per_image: bool = False,
    ) -> None:
        super().__init__(weight=weight, ignore_index=ignore_index)
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.smooth = smooth
        self.include_background = include_background
        self.per_image = per_image


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss: :class:`TverskyLoss` with ``gamma = 0.75`` by default."""

    function = staticmethod(focal_tversky_loss)

    def __init__(
        self,
        *,
        weight: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = 255,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 0.75,
        smooth: float = 1.0,
        include_background: bool = True,
        per_image: bool = False,
    ) -> None:
        super().__init__(
            weight=weight,
            ignore_index=ignore_index,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            smooth=smooth,
            include_background=include_background,
            per_image=per_image,
        )
