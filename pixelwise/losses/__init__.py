"""Losses: pure functions in :mod:`.functional`, thin modules, and a name → loss factory.

Names usable in a recipe's ``loss.terms``: ``ce``, ``bce``, ``focal``, ``dice``, ``tversky``,
``focal_tversky``, ``lovasz`` (see docs/losses.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import PixelwiseError
from .class_weights import (
    WEIGHT_SCHEMES,
    class_weights,
    effective_number,
    inverse_frequency,
    median_frequency,
)
from .cross_entropy import BCELoss, CrossEntropyLoss
from .dice import DiceLoss
from .focal import FocalLoss
from .functional import (
    binary_cross_entropy,
    cross_entropy,
    dice_loss,
    focal_loss,
    focal_tversky_loss,
    lovasz_softmax_loss,
    tversky_loss,
)
from .lovasz import LovaszSoftmaxLoss
from .tversky import FocalTverskyLoss, TverskyLoss

__all__ = [
    "LOSSES",
    "WEIGHT_SCHEMES",
    "BCELoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "LovaszSoftmaxLoss",
    "TverskyLoss",
    "WeightedSum",
    "binary_cross_entropy",
    "build_loss",
    "class_weights",
    "cross_entropy",
    "dice_loss",
    "effective_number",
    "focal_loss",
    "focal_tversky_loss",
    "inverse_frequency",
    "lovasz_softmax_loss",
    "median_frequency",
    "tversky_loss",
]

LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "bce": BCELoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "lovasz": LovaszSoftmaxLoss,
}


class WeightedSum(nn.Module):
    """``sum_i weight_i * loss_i(logits, target)``."""

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = [float(w) for w, _ in terms]
        self.terms = nn.ModuleList(m for _, m in terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for w, term in zip(self.weights, self.terms, strict=True):
            total = total + w * term(logits, target)
        return total


def build_loss(
    terms: Sequence[tuple[str, float, dict[str, Any]]],
    *,
    class_weights: Sequence[float] | None = None,
    ignore_index: int = 255,
) -> nn.Module:
    """Build a weighted sum of named losses, all sharing one ``ignore_index`` and class weights.

    Args:
        terms: ``(name, weight, params)`` for each loss, e.g. ``[("ce", 1.0, {}), ("dice", 1.0, {})]``.
        class_weights: per-class weights given to every term, or ``None``.
        ignore_index: target value every term skips.
    """
    if not terms:
        raise PixelwiseError("loss.terms is empty: name at least one loss (e.g. ce)")
    modules = []
    for name, weight, params in terms:
        if name not in LOSSES:
            raise PixelwiseError(f"unknown loss {name!r}; available: {', '.join(sorted(LOSSES))}")
        try:
            module = LOSSES[name](weight=class_weights, ignore_index=ignore_index, **params)
        except TypeError as exc:
            raise PixelwiseError(f"loss {name!r}: {exc}") from None
        modules.append((weight, module))
    return WeightedSum(modules)
