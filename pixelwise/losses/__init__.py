"""Losses: pure functions in :mod:`.functional`, thin modules, and a name → loss factory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import PixelwiseError
from .cross_entropy import CrossEntropyLoss
from .functional import cross_entropy

__all__ = ["CrossEntropyLoss", "WeightedSum", "build_loss", "cross_entropy", "LOSSES"]

LOSSES: dict[str, type[nn.Module]] = {"ce": CrossEntropyLoss}


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
    """Build a weighted sum of named losses, all sharing one ``ignore_index`` and class weights."""
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
