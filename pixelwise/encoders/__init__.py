"""Backbones that return feature maps ordered by stride, describing their channels and reductions."""

from .base import Encoder
from .unet import UNetEncoder

__all__ = ["Encoder", "UNetEncoder"]
