"""Atrous spatial pyramid pooling, in its two published forms.

* :class:`SummedASPP` — DeepLab v2 (Chen et al., TPAMI 2017, arXiv:1606.00915), "ASPP-L": parallel
  3×3 atrous convolutions at rates 6, 12, 18, 24 that each predict class scores; the scores are summed.
* :class:`ASPP` — DeepLab v3 (Chen et al. 2017, arXiv:1706.05587): a 1×1 branch, three 3×3 atrous
  branches and image-level pooling, each conv-BN-ReLU with 256 channels, concatenated and projected by a
  1×1 conv-BN-ReLU. DeepLab v3+ (arXiv:1802.02611) optionally makes the atrous branches depthwise
  separable.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from .conv import ConvNormAct, SeparableConvNormAct, init_normal_
from .pooling import ImagePooling

__all__ = ["ASPP", "SummedASPP"]


class SummedASPP(nn.Module):
    """DeepLab v2's ASPP: one 3×3 atrous conv per rate straight to class scores, outputs summed.

    Shape:
        x: (N, in_channels, H, W) → (N, num_classes, H, W).
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in rates
        )
        for conv in self.branches:  # the reference model initialises these N(0, 0.01)
            init_normal_(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class ASPP(nn.Module):
    """DeepLab v3's ASPP.

    Args:
        in_channels: channels of the encoder's deepest feature map.
        out_channels: channels of every branch and of the projection (the paper: 256).
        rates: dilation rates of the 3×3 branches (the paper: 6, 12, 18 at output stride 16).
        norm: normalisation in the conv branches and the projection (the image-pooling branch has a
            bias instead, so that it trains at batch size 1).
        separable: depthwise-separable 3×3 branches (DeepLab v3+).
        separable_style: ``tf`` or ``xception`` (:class:`SeparableConvNormAct`).
        image_pooling: include the image-level pooling branch.
        dropout: dropout after the projection.

    Shape:
        x: (N, in_channels, H, W) → (N, out_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        *,
        norm: str = "batchnorm",
        separable: bool = False,
        separable_style: str = "tf",
        image_pooling: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        block = partial(SeparableConvNormAct, style=separable_style) if separable else ConvNormAct
        branches: list[nn.Module] = [ConvNormAct(in_channels, out_channels, 1, norm=norm)]
        branches += [block(in_channels, out_channels, 3, dilation=r, norm=norm) for r in rates]
        if image_pooling:
            branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            ConvNormAct(len(branches) * out_channels, out_channels, 1, norm=norm),
            nn.Dropout(dropout),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))
