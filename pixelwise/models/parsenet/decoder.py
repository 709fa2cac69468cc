"""ParseNet's context module: global average pooling, L2 normalisation with learned scales, unpooling
(broadcast) and concatenation with the equally normalised local features."""

from __future__ import annotations

import torch
from torch import nn

from ...layers import L2Norm

__all__ = ["ParseNetContext"]


class ParseNetContext(nn.Module):
    """Early fusion of global context into the deepest feature map.

    ``context = L2Norm(gap(x))`` is broadcast to every location ("unpooling") and concatenated with
    ``L2Norm(x)``; each :class:`~pixelwise.layers.L2Norm` has its own learned per-channel scale.

    Args:
        encoder_channels: channels of the encoder features, shallowest first.
        scale: initial value of the learned scales.

    Shape:
        features → (N, 2·C, h, w) for a deepest feature of C channels and size h × w.
    """

    def __init__(self, encoder_channels: list[int], *, scale: float = 10.0) -> None:
        super().__init__()
        c = encoder_channels[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.norm_local = L2Norm(c, scale=scale)
        self.norm_context = L2Norm(c, scale=scale)
        self.out_channels = 2 * c

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        context = self.norm_context(self.pool(x)).expand(-1, -1, *x.shape[-2:])
        return torch.cat([self.norm_local(x), context], dim=1)
