"""The contracting path of the original U-Net (Ronneberger et al., MICCAI 2015, arXiv:1505.04597).

Each level is two 3×3 convolutions with ReLU; levels are joined by 2×2 max pooling with stride 2 and
the channel count doubles after every pooling: 64, 128, 256, 512, 1024 for the paper's configuration.
Deviations, both standard practice and both switchable: convolutions are padded ("same") so the output
covers the whole input instead of the paper's overlap-tile crop, and batch norm follows each convolution
(``norm="none"`` gives the paper's plain conv + ReLU).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvNormAct
from .base import Encoder

__all__ = ["DoubleConv", "UNetEncoder"]


class DoubleConv(nn.Sequential):
    """Two 3×3 conv-norm-ReLU layers: one U-Net level."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "batchnorm") -> None:
        super().__init__(
            ConvNormAct(in_channels, out_channels, 3, norm=norm),
            ConvNormAct(out_channels, out_channels, 3, norm=norm),
        )


class UNetEncoder(Encoder):
    """The U-Net contracting path.

    Args:
        in_channels: input image channels.
        base_channels: channels of the first level (the paper: 64).
        depth: number of poolings (the paper: 4, so 5 levels and 1024 channels at the bottom).
        norm: normalisation after each conv (``batchnorm`` or ``none`` for the paper's exact layers).
        dropout: dropout at the end of the contracting path (the paper uses it; 0 disables).
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        base_channels: int = 64,
        depth: int = 4,
        norm: str = "batchnorm",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.levels = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.levels.append(DoubleConv(prev, w, norm=norm))
            prev = w
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.channels = widths
        self.reductions = [2**i for i in range(depth + 1)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, level in enumerate(self.levels):
            if i > 0:
                x = self.pool(x)
            x = level(x)
            features.append(x)
        features[-1] = self.dropout(features[-1])
        return features
