"""Backbones that return feature maps ordered by stride, describing their channels and reductions."""

from .base import Encoder
from .factory import ENCODERS, create_encoder, list_encoders
from .timm_encoder import TimmEncoder
from .unet import UNetEncoder
from .vgg import VGG16Encoder
from .weights import efficientnet_lite_to_timm, imagenet_weights_path, load_encoder_weights

__all__ = [
    "ENCODERS",
    "Encoder",
    "TimmEncoder",
    "UNetEncoder",
    "VGG16Encoder",
    "create_encoder",
    "efficientnet_lite_to_timm",
    "imagenet_weights_path",
    "list_encoders",
    "load_encoder_weights",
]
