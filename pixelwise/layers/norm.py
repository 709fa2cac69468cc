"""L2 normalisation with a learned per-channel scale (ParseNet, Liu et al. 2015, arXiv:1506.04579).

Features from different layers (or a pooled context vector and the local features) have very different
magnitudes; ParseNet L2-normalises each across channels at every location and multiplies by a learned
per-channel scale ``gamma`` so that the combined features can be learned at one learning rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["L2Norm"]


class L2Norm(nn.Module):
    """``y[:, c] = gamma[c] · x[:, c] / ‖x[:, :]‖₂`` at every spatial location.

    Args:
        channels: number of channels (length of ``gamma``).
        scale: initial value of every ``gamma[c]``.
        eps: added to the norm to avoid division by zero.

    Shape:
        x: (N, C, H, W) → (N, C, H, W).
    """

    def __init__(self, channels: int, *, scale: float = 10.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in float32: under float16 autocast ``eps`` would round to 0 and an all-zero location
        # (common after ReLU) would give 0 / 0
        y = F.normalize(x.float(), p=2.0, dim=1, eps=self.eps) * self.weight.view(1, -1, 1, 1)
        return y.to(x.dtype)
