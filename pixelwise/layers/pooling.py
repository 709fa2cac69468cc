"""Pooled context: image-level pooling (DeepLab v3) and the pyramid pooling module (PSPNet).

Global (1×1) pooling branches carry no batch norm: a batch norm over N pooled vectors needs N > 1 in
training and is degenerate at N = 1, so these branches use a biased convolution instead and work at
batch size 1. Branches pooled to more than one cell keep the requested normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .conv import ConvNormAct
from .resize import resize_to

__all__ = ["ImagePooling", "PyramidPooling"]


class ImagePooling(nn.Module):
    """Global average pooling → 1×1 conv (with bias) → activation → broadcast to the input size.

    Shape:
        x: (N, in_channels, H, W) → (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, act: str = "relu") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvNormAct(in_channels, out_channels, 1, norm="none", act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.pool(x))
        return y.expand(-1, -1, *x.shape[-2:])


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module (Zhao et al., CVPR 2017, arXiv:1612.01105).

    For every bin size b: adaptive average pooling to b×b, a 1×1 conv-norm-ReLU reducing to
    ``in_channels / len(bins)`` channels, bilinear upsampling to the input size. The input and all
    branches are concatenated.

    Args:
        in_channels: channels of the input feature map.
        bins: pooled grid sizes (the paper: 1, 2, 3, 6).
        norm: normalisation in the branches with b > 1 (the b = 1 branch has a bias instead).

    Shape:
        x: (N, C, H, W) → (N, C + len(bins) · (C // len(bins)), H, W).
    """

    def __init__(
        self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6), *, norm: str = "batchnorm"
    ) -> None:
        super().__init__()
        reduced = max(1, in_channels // len(bins))
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                ConvNormAct(in_channels, reduced, 1, norm=norm if b > 1 else "none"),
            )
            for b in bins
        )
        self.bins = tuple(bins)
        self.out_channels = in_channels + len(bins) * reduced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(resize_to(stage(x), size) for stage in self.stages)], dim=1)
