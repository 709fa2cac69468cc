"""U-Net: Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (arXiv:1505.04597).

A contracting path of two-3×3-conv levels joined by max pooling (64→1024 channels), an expansive path of
2×2 up-convolutions that halve the channels, concatenated skip connections, and a 1×1 conv to the class
scores. See :mod:`pixelwise.encoders.unet` for the two documented deviations (padded convs, batch norm).

``unet`` is that original network. ``unet_encoder`` is the same design on any encoder of
:mod:`pixelwise.encoders` (pretrained ResNets, EfficientNet-Lite, VGG, ...), with skips from every stage.
"""

from __future__ import annotations

import torch
from torch import nn

from ...encoders import Encoder, UNetEncoder
from ...layers import pad_to_multiple, resize_to
from ...registry import register_model
from ..base import SegmentationModel, build_encoder
from .decoder import EncoderUNetDecoder, UNetDecoder

__all__ = ["UNet", "unet", "unet_encoder"]


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

    @property
    def input_multiple(self) -> int:
        """Inputs are zero-padded (bottom/right) to a multiple of this inside :meth:`forward`."""
        return self.encoder.output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x, _ = pad_to_multiple(x, self.input_multiple)
        logits = self.head(self.decoder(self.encoder(x)))
        # crop the padding, then (for encoders whose first feature is strided) resize to the input
        r0 = self.encoder.reductions[0]
        logits = logits[..., : -(-size[0] // r0), : -(-size[1] // r0)]
        return resize_to(logits, size)


@register_model("unet", limits={"base_channels": (1, 512), "depth": (1, 8), "dropout": (0.0, 1.0)})
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


@register_model("unet_encoder", limits={"output_stride": (8, 32), "decoder_channels": (1, 4096)})
def unet_encoder(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    encoder_weights: str | None = None,
    output_stride: int = 32,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    norm: str = "batchnorm",
    upsample: str = "bilinear",
) -> SegmentationModel:
    """U-Net on a swappable encoder, with skips from every encoder stage.

    The contracting path is the encoder; each decoder block upsamples bilinearly to the next skip's
    size, concatenates it and applies two 3×3 conv-norm-ReLU (segmentation_models_pytorch's Unet).

    Args:
        encoder: encoder name (``resnet34``, ``tf_efficientnet_lite0``, ``vgg16_bn``, ...).
        encoder_weights: ``None``, ``"imagenet"`` or a weights file.
        output_stride: 32, or 16/8 for a dilated encoder (skips at equal strides are still fused).
        decoder_channels: width of each decoder block, deepest first (one per encoder stage).
        norm: normalisation in the decoder.
        upsample: ``bilinear`` or ``nearest`` upsampling in the decoder blocks.
    """
    enc = build_encoder(
        encoder,
        in_channels=in_channels,
        output_stride=output_stride,
        encoder_weights=encoder_weights,
    )
    decoder = EncoderUNetDecoder(
        enc.channels,
        enc.reductions,
        tuple(int(c) for c in decoder_channels),
        norm=norm,
        upsample=upsample,
    )
    head = nn.Conv2d(decoder.out_channels, num_classes, 1)
    return SegmentationModel(enc, decoder, head, num_classes=num_classes)
