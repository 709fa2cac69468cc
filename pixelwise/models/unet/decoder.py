"""The U-Net expansive path, built from the encoder's channels.

:class:`UNetDecoder` is the paper's (2×2 up-convolutions, widths mirroring the encoder);
:class:`EncoderUNetDecoder` serves any encoder: bilinear upsampling to each skip's size (strides may
repeat when the encoder is dilated) and decoder widths of their own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...encoders.unet import DoubleConv
from ...errors import PixelwiseError
from ...layers import ConvNormAct, resize_to

__all__ = ["UPSAMPLE_MODES", "UpBlock", "UNetDecoder", "ResizeUpBlock", "EncoderUNetDecoder"]

UPSAMPLE_MODES = ("bilinear", "nearest")


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


class ResizeUpBlock(nn.Module):
    """Upsampling to ``size`` (the skip's; bilinear or nearest), concatenation of the skip, two 3×3
    conv-norm-ReLU."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        norm: str = "batchnorm",
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise PixelwiseError(
                f"unknown upsample {upsample!r}; choose one of {', '.join(UPSAMPLE_MODES)}"
            )
        self.upsample = upsample
        self.conv = nn.Sequential(
            ConvNormAct(in_channels + skip_channels, out_channels, 3, norm=norm),
            ConvNormAct(out_channels, out_channels, 3, norm=norm),
        )

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        if self.upsample == "nearest":
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        else:
            x = resize_to(x, size)
        return self.conv(x if skip is None else torch.cat([x, skip], dim=1))


class EncoderUNetDecoder(nn.Module):
    """U-Net expansive path over any encoder: one block per skip (every encoder feature but the
    deepest), deepest first, then one block without a skip up to stride 1 when the shallowest
    feature is strided.

    Args:
        encoder_channels: channels of the encoder features, shallowest first.
        encoder_reductions: their strides.
        decoder_channels: output width of each block, deepest first; one per block.
        norm: normalisation inside each block.
        upsample: ``bilinear`` or ``nearest`` (segmentation_models_pytorch's default; cheaper on CPU).

    Shape:
        features → (N, decoder_channels[-1], r·h, r·w), h × w the size of ``features[0]`` and r its
        reduction.
    """

    def __init__(
        self,
        encoder_channels: list[int],
        encoder_reductions: list[int],
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        *,
        norm: str = "batchnorm",
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        skips = list(reversed(encoder_channels[:-1]))
        self.first_stride = encoder_reductions[0]
        needed = len(skips) + (self.first_stride > 1)
        if len(decoder_channels) != needed:
            raise PixelwiseError(
                f"decoder_channels {list(decoder_channels)}: this encoder needs {needed} values "
                f"(one per decoder block)"
            )
        blocks, prev = [], encoder_channels[-1]
        for skip, out in zip(skips + [0] * (needed - len(skips)), decoder_channels, strict=True):
            blocks.append(ResizeUpBlock(prev, skip, out, norm=norm, upsample=upsample))
            prev = out
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = prev

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        skips = list(reversed(features[:-1]))
        for i, block in enumerate(self.blocks):
            if i < len(skips):
                x = block(x, skips[i], skips[i].shape[-2:])
            else:
                h, w = features[0].shape[-2:]
                x = block(x, None, (h * self.first_stride, w * self.first_stride))
        return x
