"""Architectures. Importing this package registers every builder with :mod:`pixelwise.registry`."""

from . import deeplab, fcn, parsenet, pspnet, unet
from .base import SegmentationModel

__all__ = ["SegmentationModel", "deeplab", "fcn", "parsenet", "pspnet", "unet"]
