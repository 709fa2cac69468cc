"""U-Net: Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (arXiv:1505.04597).

A contracting path of two-3×3-conv levels joined by max pooling (64→1024 channels), an expansive path of
2×2 up-convolutions that halve the channels, concatenated skip connections, and a 1×1 conv to the class
scores. See :mod:`pixelwise.encoders.unet` for the two documented deviations (padded convs, batch norm).
"""

from __future__ import annotations

import torch
from torch import nn

from ...encoders import Encoder, UNetEncoder
from ...layers import pad_to_multiple, resize_to
from ...registry import register_model
from .decoder import UNetDecoder

__all__ = ["UNet", "unet"]


class UNet(nn.Module):
    """Encoder + U-Net decoder + 1×1 classifier. Returns logits at the input's height and width.

    Shape:
        x: (N, in_channels, H, W) → (N, num_classes, H, W) for any H, W.
    """

    def __init__(self, encoder: Encoder, num_classes: int, *, norm: str = "batchnorm") -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder.channels, norm=norm)
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, kernel_size=1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x, _ = pad_to_multiple(x, self.encoder.output_stride)
        logits = self.head(self.decoder(self.encoder(x)))
        # crop the padding, then (for encoders whose first feature is strided) resize to the input
        r0 = self.encoder.reductions[0]
        logits = logits[..., : -(-size[0] // r0), : -(-size[1] // r0)]
        return resize_to(logits, size)


@register_model("unet")
def unet(
    *,
    num_classes: int,
    in_channels: int = 3,
    base_channels: int = 64,
    depth: int = 4,
    norm: str = "batchnorm",
    dropout: float = 0.0,
) -> UNet:
    """The original U-Net (64→1024 channels with the defaults; ``base_channels`` scales every level)."""
    encoder = UNetEncoder(
        in_channels, base_channels=base_channels, depth=depth, norm=norm, dropout=dropout
    )
    return UNet(encoder, num_classes, norm=norm)
