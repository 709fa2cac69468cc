"""The DeepLab family, each with a swappable encoder.

* DeepLab v1 — Chen, Papandreou, Kokkinos, Murphy and Yuille, "Semantic Image Segmentation with Deep
  Convolutional Nets and Fully Connected CRFs", ICLR 2015 (arXiv:1412.7062). The LargeFOV variant:
  atrous VGG-16 (output stride 8, fc6 3×3×1024 with dilation 12), a 1×1 classifier, bilinear upsampling.
  The paper refines the scores with a fully connected CRF; that is post-processing at prediction time
  (:mod:`pixelwise.crf`, which ``deeplabv1`` segmenters apply by default), so the network here is
  complete without it.
* DeepLab v2 — Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
  Convolution, and Fully Connected CRFs", TPAMI 2017 (arXiv:1606.00915). ASPP-L on a dilated ResNet-101:
  four 3×3 atrous convolutions (rates 6, 12, 18, 24) predicting class scores, summed.
* DeepLab v3 — Chen, Papandreou, Schroff and Adam, "Rethinking Atrous Convolution for Semantic Image
  Segmentation", 2017 (arXiv:1706.05587). ASPP with a 1×1 branch, three 3×3 atrous branches (6, 12, 18 at
  output stride 16, doubled at 8) and image-level pooling, all with batch norm, concatenated and
  projected to 256 channels; optional multi-grid rates in the last ResNet stage.
* DeepLab v3+ — Chen, Zhu, Papandreou, Schroff and Adam, "Encoder-Decoder with Atrous Separable
  Convolution for Semantic Image Segmentation", ECCV 2018 (arXiv:1802.02611). The v3 encoder plus a
  decoder fusing 48-channel stride-4 features; optional depthwise-separable convolutions.

Deviations (docs/architectures.md): the image-pooling branch has a bias instead of batch norm (it works
at batch size 1); the loss is computed on logits upsampled to the label size rather than on labels
subsampled by 8 (v1/v2); multi-scale inputs (v2's MSC) and the Xception backbone (v3+) are not included.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ...errors import PixelwiseError
from ...layers import init_normal_
from ...registry import register_model
from ..base import SegmentationModel, build_encoder
from .decoder import DeepestFeature, DeepLabV2Decoder, DeepLabV3Decoder, DeepLabV3PlusDecoder

__all__ = ["deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3plus"]

# the range of each argument that sets a size or a count (pixelwise.registry checks them first)
_V3_LIMITS = {
    "output_stride": (8, 32),
    "rates": (1, 256),
    "multi_grid": (1, 16),
    "aspp_channels": (1, 4096),
    "head_convs": (0, 8),
    "dropout": (0.0, 1.0),
}
_V3PLUS_LIMITS = {
    **{k: v for k, v in _V3_LIMITS.items() if k != "head_convs"},
    "low_level_stride": (1, 32),
    "low_level_channels": (1, 4096),
    "decoder_convs": (0, 8),
    "aspp_head_convs": (0, 8),
}


def _rates(rates: Sequence[int] | None, reference: tuple[int, ...], at: int, os: int) -> list[int]:
    """``rates`` as given, or the paper's ``reference`` rates (set at output stride ``at``) rescaled."""
    if rates is None:
        return [max(1, r * at // os) for r in reference]
    if not rates or any(int(r) < 1 for r in rates):
        raise PixelwiseError(f"rates must be positive integers, got {list(rates)!r}")
    return [int(r) for r in rates]


@register_model("deeplabv1", limits={"output_stride": (8, 32)})
def deeplabv1(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "vgg16_largefov",
    encoder_weights: str | None = None,
    output_stride: int = 8,
) -> SegmentationModel:
    """DeepLab v1 (LargeFOV): the encoder's deepest feature → 1×1 classifier → bilinear upsampling.

    Args:
        encoder: encoder name (``vgg16_largefov`` is the paper's atrous VGG-16 with fc6/fc7).
        encoder_weights: ``None``, ``"imagenet"`` or a weights file.
        output_stride: 8 (the paper), 16 or 32.
    """
    enc = build_encoder(
        encoder,
        in_channels=in_channels,
        output_stride=output_stride,
        encoder_weights=encoder_weights,
    )
    decoder = DeepestFeature(enc.channels)
    head = init_normal_(nn.Conv2d(decoder.out_channels, num_classes, 1))
    return SegmentationModel(enc, decoder, head, num_classes=num_classes)


@register_model("deeplabv2", limits={"output_stride": (8, 32), "rates": (1, 256)})
def deeplabv2(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet101",
    encoder_weights: str | None = None,
    output_stride: int = 8,
    rates: tuple[int, ...] | None = None,
) -> SegmentationModel:
    """DeepLab v2: ASPP-L (summed atrous class-score branches) on the encoder's deepest feature.

    Args:
        encoder: encoder name (the paper: ResNet-101).
        encoder_weights: ``None``, ``"imagenet"`` or a weights file.
        output_stride: 8 (the paper), 16 or 32.
        rates: ASPP rates; ``None``: 6, 12, 18, 24 at output stride 8, scaled by 8 / output_stride.
    """
    enc = build_encoder(
        encoder,
        in_channels=in_channels,
        output_stride=output_stride,
        encoder_weights=encoder_weights,
    )
    decoder = DeepLabV2Decoder(
        enc.channels, num_classes, _rates(rates, (6, 12, 18, 24), 8, output_stride)
    )
    return SegmentationModel(enc, decoder, nn.Identity(), num_classes=num_classes)


@register_model("deeplabv3", limits=_V3_LIMITS)
def deeplabv3(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet101",
    encoder_weights: str | None = None,
    output_stride: int = 16,
    rates: tuple[int, ...] | None = None,
    multi_grid: tuple[int, ...] = (),
    aspp_channels: int = 256,
    head_convs: int = 0,
    dropout: float = 0.1,
) -> SegmentationModel:
    """DeepLab v3: ASPP (1×1, three atrous 3×3, image pooling) → 1×1 classifier → bilinear upsampling.

    Args:
        encoder: encoder name (the paper: ResNet-50/101).
        encoder_weights: ``None``, ``"imagenet"`` or a weights file.
        output_stride: 16 (the paper's training setting), 8 or 32. Weights do not depend on it: a
            model trained at 16 can be rebuilt at 8 for evaluation, as the paper does.
        rates: ASPP atrous rates; ``None``: 6, 12, 18 at output stride 16, scaled by 16 / output_stride.
        multi_grid: rate multipliers for the blocks of a ResNet's last stage (the paper's best:
            ``(1, 2, 4)``); empty for none.
        aspp_channels: width of the ASPP branches and projection (the paper: 256).
        head_convs: 3×3 conv-BN-ReLU layers after the ASPP (the paper: 0; torchvision: 1).
        dropout: dropout after the ASPP projection.
    """
    if head_convs < 0:
        raise PixelwiseError(f"head_convs must be >= 0, got {head_convs!r}")
    enc = build_encoder(
        encoder,
        in_channels=in_channels,
        output_stride=output_stride,
        encoder_weights=encoder_weights,
        multi_grid=multi_grid,
    )
    decoder = DeepLabV3Decoder(
        enc.channels,
        channels=aspp_channels,
        rates=_rates(rates, (6, 12, 18), 16, output_stride),
        head_convs=head_convs,
        dropout=dropout,
    )
    head = nn.Conv2d(decoder.out_channels, num_classes, 1)
    return SegmentationModel(enc, decoder, head, num_classes=num_classes)


@register_model("deeplabv3plus", limits=_V3PLUS_LIMITS)
def deeplabv3plus(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet101",
    encoder_weights: str | None = None,
    output_stride: int = 16,
    rates: tuple[int, ...] | None = None,
    multi_grid: tuple[int, ...] = (),
    aspp_channels: int = 256,
    low_level_stride: int = 4,
    low_level_channels: int = 48,
    separable: bool = False,
    separable_style: str = "tf",
    decoder_convs: int = 2,
    aspp_head_convs: int = 0,
    dropout: float = 0.1,
) -> SegmentationModel:
    """DeepLab v3+: the v3 ASPP plus a decoder fusing low-level features; bilinear upsampling ×4.

    Args:
        encoder: encoder name (the paper: ResNet-101 or Xception).
        encoder_weights: ``None``, ``"imagenet"`` or a weights file.
        output_stride: 16 (the paper), 8 or 32.
        rates: ASPP atrous rates; ``None``: 6, 12, 18 at output stride 16, scaled by 16 / output_stride.
        multi_grid: rate multipliers for the blocks of a ResNet's last stage; empty for none.
        aspp_channels: width of the ASPP and of the decoder convs (the paper: 256).
        low_level_stride: stride of the encoder feature the decoder fuses (the paper: 4).
        low_level_channels: width that feature is reduced to (the paper: 48).
        separable: depthwise-separable convolutions in the ASPP and the decoder.
        separable_style: ``tf`` (depthwise → norm → ReLU → pointwise → norm → ReLU, the paper's
            code) or ``xception`` (depthwise → pointwise → norm → ReLU, segmentation_models_pytorch's).
        decoder_convs: 3×3 convs after the concatenation (the paper: 2; smp: 1).
        aspp_head_convs: 3×3 convs after the ASPP (the paper: 0; smp: 1).
        dropout: dropout after the ASPP projection.
    """
    enc = build_encoder(
        encoder,
        in_channels=in_channels,
        output_stride=output_stride,
        encoder_weights=encoder_weights,
        multi_grid=multi_grid,
    )
    if low_level_stride not in enc.reductions:
        raise PixelwiseError(
            f"low_level_stride {low_level_stride!r}: encoder {encoder!r} has features at strides "
            f"{sorted(set(enc.reductions))}"
        )
    decoder = DeepLabV3PlusDecoder(
        enc.channels,
        low_level_index=enc.reductions.index(low_level_stride),
        channels=aspp_channels,
        low_level_channels=low_level_channels,
        rates=_rates(rates, (6, 12, 18), 16, output_stride),
        separable=separable,
        separable_style=separable_style,
        fuse_convs=decoder_convs,
        aspp_head_convs=aspp_head_convs,
        dropout=dropout,
    )
    head = nn.Conv2d(decoder.out_channels, num_classes, 1)
    return SegmentationModel(enc, decoder, head, num_classes=num_classes)
