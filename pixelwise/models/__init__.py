"""Architectures. Importing this package registers every builder with :mod:`pixelwise.registry`."""

from . import unet

__all__ = ["unet"]
