"""FCN-32s, FCN-16s and FCN-8s: Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015 (arXiv:1411.4038).

A classification network with its fully connected layers turned into convolutions (VGG-16's fc6/fc7)
scores every location with a 1×1 conv; the coarse scores are upsampled in-network by transposed
convolutions initialised to bilinear interpolation. FCN-16s adds the scores of pool4 (stride 16) before
upsampling, FCN-8s also those of pool3 (stride 8). Score layers are zero-initialised as in the paper.

Faithful with ``encoder="vgg16"`` (the default). Deviations (docs/architectures.md): "same"-padded
convolutions instead of the 100-pixel padding and crop layers; per-class (grouped) upsampling kernels;
upsampling learned by default (``learn_upsampling=False`` freezes it, as the reference Caffe models do);
all three trained at once rather than in stages (32s → 16s → 8s), without the at-once scaling of the
pool3/pool4 scores. On encoders without fc layers, a 3×3 conv-BN-ReLU (``head_channels``, by default a
quarter of the deepest channels, as torchvision's FCN) stands in for fc6/fc7.
"""

from __future__ import annotations

from torch import nn

from ...registry import register_model
from ..base import SegmentationModel, build_encoder
from .decoder import FCNDecoder

__all__ = ["fcn32s", "fcn16s", "fcn8s"]

_HAS_FC = ("vgg16", "vgg16_largefov")  # encoders whose deepest feature is already fc7
# the range of each argument that sets a size (pixelwise.registry checks them first)
_LIMITS = {"output_stride": (8, 32), "head_channels": (0, 8192)}


def _fcn(
    skips: int,
    *,
    num_classes: int,
    in_channels: int,
    encoder: str,
    encoder_weights: str | None,
    output_stride: int,
    head_channels: int | None,
    learn_upsampling: bool,
) -> SegmentationModel:
    enc = build_encoder(
        encoder,
        in_channels=in_channels,
        output_stride=output_stride,
        encoder_weights=encoder_weights,
    )
    if head_channels is None:
        head_channels = 0 if encoder in _HAS_FC else enc.channels[-1] // 4
    decoder = FCNDecoder(
        enc.channels,
        enc.reductions,
        num_classes,
        skips=skips,
        head_channels=head_channels,
        learn_upsampling=learn_upsampling,
    )
    return SegmentationModel(enc, decoder, nn.Identity(), num_classes=num_classes)


@register_model("fcn32s", limits=_LIMITS)
def fcn32s(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "vgg16",
    encoder_weights: str | None = None,
    output_stride: int = 32,
    head_channels: int | None = None,
    learn_upsampling: bool = True,
) -> SegmentationModel:
    """FCN-32s: score the deepest feature, upsample ×32 (×output_stride).

    Args:
        encoder: encoder name (``vgg16`` is the paper's VGG-16 with fc6/fc7).
        encoder_weights: ``None``, ``"imagenet"`` or a weights file (see pixelwise.encoders.weights).
        output_stride: 8, 16 or 32.
        head_channels: 3×3 conv width before the score layer; ``None``: 0 for the VGG-16 encoders,
            a quarter of the deepest channels otherwise.
        learn_upsampling: train the bilinear-initialised transposed convolutions.
    """
    return _fcn(0, **locals())


@register_model("fcn16s", limits=_LIMITS)
def fcn16s(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "vgg16",
    encoder_weights: str | None = None,
    output_stride: int = 32,
    head_channels: int | None = None,
    learn_upsampling: bool = True,
) -> SegmentationModel:
    """FCN-16s: FCN-32s plus the scores of the second-deepest feature (pool4). Arguments as fcn32s."""
    return _fcn(1, **locals())


@register_model("fcn8s", limits=_LIMITS)
def fcn8s(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "vgg16",
    encoder_weights: str | None = None,
    output_stride: int = 32,
    head_channels: int | None = None,
    learn_upsampling: bool = True,
) -> SegmentationModel:
    """FCN-8s: FCN-16s plus the scores of the third-deepest feature (pool3). Arguments as fcn32s."""
    return _fcn(2, **locals())
