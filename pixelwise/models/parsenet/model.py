"""ParseNet: Liu, Rabinovich and Berg, "ParseNet: Looking Wider to See Better", ICLR 2016 workshop
(arXiv:1506.04579).

Global context for a fully convolutional network: the deepest feature map (fc7) is average-pooled over
the whole image, the pooled vector and the local features are each L2-normalised across channels and
multiplied by a learned per-channel scale, the vector is "unpooled" (copied to every location) and
concatenated with the local features, and a 1×1 classifier scores the result. Logits are upsampled
bilinearly.

Default encoder: the paper's PASCAL VOC setting, DeepLab-LargeFOV's atrous VGG-16 (``vgg16_largefov``,
output stride 8); its SiftFlow/PASCAL-Context models build on FCN-32s (``encoder="vgg16",
output_stride=32``). Deviations (docs/architectures.md): context is added at fc7 only (the paper also
tries lower layers); the scales start at 10 for both inputs.
"""

from __future__ import annotations

from torch import nn

from ...errors import PixelwiseError
from ...layers import init_normal_
from ...registry import register_model
from ..base import SegmentationModel, build_encoder
from .decoder import ParseNetContext

__all__ = ["parsenet"]


@register_model("parsenet", limits={"output_stride": (8, 32), "norm_scale": (1e-3, 1e3)})
def parsenet(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "vgg16_largefov",
    encoder_weights: str | None = None,
    output_stride: int = 8,
    norm_scale: float = 10.0,
) -> SegmentationModel:
    """ParseNet.

    Args:
        encoder: encoder name (``vgg16_largefov`` or ``vgg16`` for the paper's networks).
        encoder_weights: ``None``, ``"imagenet"`` or a weights file.
        output_stride: 8, 16 or 32.
        norm_scale: initial value of the learned L2-normalisation scales.
    """
    if norm_scale <= 0:
        raise PixelwiseError(f"norm_scale must be positive, got {norm_scale!r}")
    enc = build_encoder(
        encoder,
        in_channels=in_channels,
        output_stride=output_stride,
        encoder_weights=encoder_weights,
    )
    decoder = ParseNetContext(enc.channels, scale=norm_scale)
    head = init_normal_(nn.Conv2d(decoder.out_channels, num_classes, 1))
    return SegmentationModel(enc, decoder, head, num_classes=num_classes)
