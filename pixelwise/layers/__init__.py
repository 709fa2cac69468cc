"""Small reusable building blocks shared by the architectures."""

from .conv import ConvNormAct, make_activation, make_norm
from .resize import pad_to_multiple, resize_to

__all__ = ["ConvNormAct", "make_norm", "make_activation", "pad_to_multiple", "resize_to"]
