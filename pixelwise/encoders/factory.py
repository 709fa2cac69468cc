"""Encoders by name: ``create_encoder("resnet50", output_stride=8, weights="imagenet")``.

Names are the classic VGG-16s of :mod:`.vgg` (``vgg16``, ``vgg16_largefov``) or any timm model name
(built with ``features_only=True``, ``pretrained=False``). :data:`ENCODERS` lists the ones pixelwise
tests and documents; other timm names work where timm supports ``features_only``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import PixelwiseError
from .base import Encoder
from .timm_encoder import TimmEncoder
from .vgg import VGG16Encoder
from .weights import load_encoder_weights

__all__ = ["ENCODERS", "create_encoder", "list_encoders"]

ENCODERS: tuple[str, ...] = (
    "mobilenetv3_large_100",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "vgg16",
    "vgg16_bn",
    "vgg16_largefov",
)

_VGG = {"vgg16": "fcn", "vgg16_largefov": "largefov"}


def list_encoders() -> list[str]:
    """The encoder names pixelwise tests and documents (any other timm name may work too)."""
    return list(ENCODERS)


def create_encoder(
    name: str,
    *,
    in_channels: int = 3,
    output_stride: int | None = None,
    weights: str | None = None,
    multi_grid: Sequence[int] = (),
) -> Encoder:
    """Build an encoder.

    Args:
        name: ``vgg16``, ``vgg16_largefov`` or a timm model name.
        in_channels: input image channels (pretrained first convs are adapted, as timm does).
        output_stride: 8, 16 or 32: the stride of the deepest feature, reached by dilation
            (``None``: the encoder's own, 8 for ``vgg16_largefov`` and 32 for every other).
        weights: ``None`` (random init), ``"imagenet"`` (offline sources only, see
            :mod:`.weights`) or a path to a weights file.
        multi_grid: DeepLab v3 multi-grid rates for a ResNet's last stage; empty for none.

    Returns:
        The encoder; ``encoder(x)`` returns features ordered by stride, described by
        ``encoder.channels`` and ``encoder.reductions``.
    """
    if not isinstance(name, str) or not name:
        raise PixelwiseError(f"encoder must be a name such as 'resnet50', got {name!r}")
    if in_channels < 1:
        raise PixelwiseError(f"in_channels must be at least 1, got {in_channels!r}")
    if name in _VGG:
        if multi_grid:
            raise PixelwiseError(f"multi_grid needs a ResNet encoder, not {name!r}")
        encoder: Encoder = VGG16Encoder(
            in_channels, output_stride=output_stride, variant=_VGG[name]
        )
    else:
        encoder = TimmEncoder(
            name,
            in_channels=in_channels,
            output_stride=output_stride or 32,
            multi_grid=multi_grid,
        )
    if weights is not None:
        load_encoder_weights(encoder, str(weights), name=name)
    return encoder
