"""What every loss module stores: class weights (a non-persistent buffer) and ``ignore_index``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["WeightedLoss"]


class WeightedLoss(nn.Module):
    """Base of the loss modules: holds ``weight`` (per class, or ``None``) and ``ignore_index``."""

    weight: torch.Tensor | None

    def __init__(
        self, *, weight: Sequence[float] | torch.Tensor | None = None, ignore_index: int = 255
    ) -> None:
        super().__init__()
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        self.register_buffer("weight", w, persistent=False)
        self.ignore_index = ignore_index
