"""PSPNet: Zhao, Shi, Qi, Wang and Jia, "Pyramid Scene Parsing Network", CVPR 2017 (arXiv:1612.01105).

A dilated ResNet (output stride 8) feeds the pyramid pooling module: average pooling to 1×1, 2×2, 3×3
and 6×6 bins, a 1×1 conv reducing each to 1/4 of the channels, bilinear upsampling, concatenation with
the features, then a 3×3 conv (512), dropout 0.1 and a 1×1 classifier; logits are upsampled bilinearly.
Deep supervision: an auxiliary head on the stage-4 features (``res4b22`` in the paper; the encoder's
second-deepest feature here) whose loss is weighted 0.4.

Deviations (docs/architectures.md): timm's ResNets have the standard 7×7 stem instead of the paper's
three 3×3 convs; the 1×1 pyramid level has a bias instead of batch norm so training works at batch
size 1; bilinear resizing uses ``align_corners=False``.
"""

from __future__ import annotations

from torch import nn

from ...errors import PixelwiseError
from ...registry import register_model
from ..base import SegmentationModel, build_encoder
from .decoder import PSPAuxHead, PSPDecoder

__all__ = ["pspnet"]

# the range of each argument that sets a size or a count (pixelwise.registry checks them first)
_LIMITS = {
    "output_stride": (8, 32),
    "bins": (1, 64),
    "decoder_channels": (1, 8192),
    "fuse_kernel": (1, 3),
    "aux_weight": (0.0, 100.0),
    "dropout": (0.0, 1.0),
}


@register_model("pspnet", limits=_LIMITS)
def pspnet(
    *,
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet50",
    encoder_weights: str | None = None,
    output_stride: int = 8,
    bins: tuple[int, ...] = (1, 2, 3, 6),
    decoder_channels: int = 512,
    fuse_kernel: int = 3,
    aux_weight: float = 0.4,
    dropout: float = 0.1,
) -> SegmentationModel:
    """PSPNet.

    Args:
        encoder: encoder name (the paper: a dilated ResNet-50/101).
        encoder_weights: ``None``, ``"imagenet"`` or a weights file.
        output_stride: 8 (the paper), 16 or 32.
        bins: pyramid pooling grid sizes.
        decoder_channels: width of the conv after pyramid pooling.
        fuse_kernel: its kernel size: 3 (the paper) or 1 (segmentation_models_pytorch's PSPNet, about
            100 GFLOPs fewer at 384×480 on a ResNet-50 at output stride 8).
        aux_weight: weight of the auxiliary loss; 0 builds no auxiliary head.
        dropout: dropout before both classifiers.
    """
    if not bins or any(int(b) < 1 for b in bins):
        raise PixelwiseError(f"bins must be positive grid sizes, got {list(bins)!r}")
    if fuse_kernel not in (1, 3):
        raise PixelwiseError(f"fuse_kernel must be 1 or 3, got {fuse_kernel!r}")
    if aux_weight < 0:
        raise PixelwiseError(f"aux_weight must be >= 0, got {aux_weight!r}")
    enc = build_encoder(
        encoder,
        in_channels=in_channels,
        output_stride=output_stride,
        encoder_weights=encoder_weights,
    )
    decoder = PSPDecoder(
        enc.channels,
        bins=tuple(int(b) for b in bins),
        channels=decoder_channels,
        fuse_kernel=fuse_kernel,
        dropout=dropout,
    )
    head = nn.Conv2d(decoder.out_channels, num_classes, 1)
    aux = PSPAuxHead(enc.channels[-2], num_classes, dropout=dropout) if aux_weight > 0 else None
    return SegmentationModel(
        enc, decoder, head, num_classes=num_classes, aux_head=aux, aux_weight=aux_weight
    )
