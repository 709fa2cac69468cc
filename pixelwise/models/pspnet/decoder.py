"""PSPNet's decoder (pyramid pooling + 3×3 fusion conv) and its auxiliary head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...layers import ConvNormAct, PyramidPooling

__all__ = ["PSPDecoder", "PSPAuxHead"]


class PSPDecoder(nn.Module):
    """Pyramid pooling on the deepest feature, then a 3×3 conv-norm-ReLU and dropout.

    Args:
        encoder_channels: channels of the encoder features, shallowest first.
        bins: pyramid levels (the paper: 1, 2, 3, 6).
        channels: width of the fusion conv (the paper: 512).
        fuse_kernel: kernel size of the fusion conv (the paper: 3; segmentation_models_pytorch: 1).
        norm: normalisation.
        dropout: dropout before the classifier (the paper: 0.1).

    Shape:
        features → (N, channels, h, w), h × w the size of the deepest feature.
    """

    def __init__(
        self,
        encoder_channels: list[int],
        *,
        bins: Sequence[int] = (1, 2, 3, 6),
        channels: int = 512,
        fuse_kernel: int = 3,
        norm: str = "batchnorm",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.ppm = PyramidPooling(encoder_channels[-1], bins, norm=norm)
        self.bottleneck = ConvNormAct(self.ppm.out_channels, channels, fuse_kernel, norm=norm)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.dropout(self.bottleneck(self.ppm(features[-1])))


class PSPAuxHead(nn.Sequential):
    """Deep supervision: 3×3 conv-norm-ReLU (a quarter of the input channels), dropout, 1×1 classifier."""

    def __init__(
        self, in_channels: int, num_classes: int, *, norm: str = "batchnorm", dropout: float = 0.1
    ) -> None:
        mid = max(1, in_channels // 4)
        super().__init__(
            ConvNormAct(in_channels, mid, 3, norm=norm),
            nn.Dropout2d(dropout),
            nn.Conv2d(mid, num_classes, 1),
        )
