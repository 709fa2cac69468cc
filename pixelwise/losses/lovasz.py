"""Module wrapper for :func:`~pixelwise.losses.functional.lovasz_softmax_loss` (Berman et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._base import WeightedLoss
from .functional import lovasz_softmax_loss

__all__ = ["LovaszSoftmaxLoss"]


class LovaszSoftmaxLoss(WeightedLoss):
    """Lovász-softmax: a convex surrogate of ``1 - IoU``, averaged over (present) classes."""

    function = staticmethod(lovasz_softmax_loss)

    def __init__(
        self,
        *,
        weight: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = 255,
        per_image: bool = False,
        include_background: bool = True,
        only_present: bool = True,
    ) -> None:
        super().__init__(weight=weight, ignore_index=ignore_index)
        self.per_image = per_image
        self.include_background = include_background
        self.only_present = only_present
