"""Pooled context: image-level pooling (DeepLab v3) and the pyramid pooling module (PSPNet).

Global (1×1) pooling branches carry no batch norm: a batch norm over N pooled vectors needs N > 1 in
training and is degenerate at N = 1, so these branches use a biased convolution instead and work at
batch size 1. Branches pooled to more than one cell keep the requested normalisation.

Adaptive average pooling is :class:`AdaptiveAvgPool2d`, not ``torch.nn.AdaptiveAvgPool2d``: the same
numbers (PyTorch's bins), written as two averaging matrices so that it exports to ONNX for any input
size. PyTorch's own op (b > 1) exports tied to the sample's size: in torch 2.14, pooling to 3×3 exported
at 12×12 gives a 3×4 grid at 13×17 and fails at 7×5.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conv import ConvNormAct
from .resize import resize_to

__all__ = ["AdaptiveAvgPool2d", "ImagePooling", "PyramidPooling", "adaptive_avg_pool2d"]


def _averaging_matrix(length: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """The ``bins × length`` matrix averaging each of PyTorch's adaptive-pooling bins along one axis.

    Bin i covers ``[floor(i·L/b), ceil((i+1)·L/b))``, as in ``F.adaptive_avg_pool2d``; bins overlap
    when ``L`` is not a multiple of ``b`` and repeat cells when ``L < b``. Built from ``arange``
    comparisons, so ``length`` may be symbolic while exporting.
    """
    i = torch.arange(bins, device=like.device)
    start = (i * length).div(bins, rounding_mode="floor")
    end = ((i + 1) * length + bins - 1).div(bins, rounding_mode="floor")
    pos = torch.arange(length, device=like.device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def adaptive_avg_pool2d(x: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` that exports to ONNX with dynamic height and width.

    Global pooling (1×1) is a mean. Other sizes run PyTorch's own kernel, except while tracing or
    exporting, where they are ``P_h @ x @ P_wᵀ`` with averaging matrices (the same bins; the matrix
    form is several times slower on channels-last CPU tensors, so it is kept for export only).

    Shape:
        x: (N, C, H, W) → (N, C, bh, bw) for ``output_size`` (bh, bw) or b = bh = bw.
    """
    bh, bw = (output_size, output_size) if isinstance(output_size, int) else output_size
    if bh == 1 and bw == 1:
        return x.mean(dim=(-2, -1), keepdim=True)
    if not (torch.jit.is_tracing() or torch.compiler.is_exporting()):
        return F.adaptive_avg_pool2d(x, (bh, bw))
    h, w = x.shape[-2:]
    return _averaging_matrix(h, bh, x) @ x @ _averaging_matrix(w, bw, x).transpose(0, 1)


class AdaptiveAvgPool2d(nn.Module):
    """Drop-in ``nn.AdaptiveAvgPool2d`` (same bins, no parameters) that exports to ONNX for any size.

    Args:
        output_size: b for a b×b grid, or (bh, bw).

    Shape:
        x: (N, C, H, W) → (N, C, bh, bw).
    """

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class ImagePooling(nn.Module):
    """Global average pooling → 1×1 conv (with bias) → activation → broadcast to the input size.

    Shape:
        x: (N, in_channels, H, W) → (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, *, act: str = "relu") -> None:
        super().__init__()
        self.pool = AdaptiveAvgPool2d(1)
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
                AdaptiveAvgPool2d(b),
                ConvNormAct(in_channels, reduced, 1, norm=norm if b > 1 else "none"),
            )
            for b in bins
        )
        self.bins = tuple(bins)
        self.out_channels = in_channels + len(bins) * reduced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(resize_to(stage(x), size) for stage in self.stages)], dim=1)
