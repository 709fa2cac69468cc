"""The U-Net expansive path, built from the encoder's channels."""

from __future__ import annotations

import torch
from torch import nn

from ...encoders.unet import DoubleConv

__all__ = ["UpBlock", "UNetDecoder"]


class UpBlock(nn.Module):
    """2×2 transposed conv (stride 2) to the skip's channels, concatenate the skip, two 3×3 convs."""

    def __init__(self, in_channels: int, skip_channels: int, *, norm: str = "batchnorm") -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * skip_channels, skip_channels, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.conv(torch.cat([skip, x], dim=1))


class UNetDecoder(nn.Module):
    """Expansive path: one :class:`UpBlock` per skip, deepest first.

    Args:
        encoder_channels: channels of the encoder features, shallowest first.
        norm: normalisation inside each block.

    Shape:
        features: list of (N, C_i, H / r_i, W / r_i) → (N, encoder_channels[0], H / r_0, W / r_0).
    """

    def __init__(self, encoder_channels: list[int], *, norm: str = "batchnorm") -> None:
        super().__init__()
        chans = list(encoder_channels)
        self.blocks = nn.ModuleList(
            UpBlock(chans[i + 1], chans[i], norm=norm) for i in reversed(range(len(chans) - 1))
        )
        self.out_channels = chans[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1]), strict=True):
            x = block(x, skip)
        return x
