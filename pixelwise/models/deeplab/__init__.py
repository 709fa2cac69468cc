"""DeepLab v1, v2, v3 and v3+ (Chen et al. 2015-2018)."""

from .decoder import DeepestFeature, DeepLabV2Decoder, DeepLabV3Decoder, DeepLabV3PlusDecoder
from .model import deeplabv1, deeplabv2, deeplabv3, deeplabv3plus

__all__ = [
    "DeepLabV2Decoder",
    "DeepLabV3Decoder",
    "DeepLabV3PlusDecoder",
    "DeepestFeature",
    "deeplabv1",
    "deeplabv2",
    "deeplabv3",
    "deeplabv3plus",
]
