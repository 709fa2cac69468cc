"""Small reusable building blocks shared by the architectures."""

from .aspp import ASPP, SummedASPP
from .conv import ConvNormAct, SeparableConvNormAct, init_normal_, make_activation, make_norm
from .norm import L2Norm
from .pooling import ImagePooling, PyramidPooling
from .resize import pad_to_multiple, resize_to
from .upsample import BilinearConvTranspose2d, bilinear_kernel

__all__ = [
    "ASPP",
    "BilinearConvTranspose2d",
    "ConvNormAct",
    "ImagePooling",
    "L2Norm",
    "PyramidPooling",
    "SeparableConvNormAct",
    "SummedASPP",
    "bilinear_kernel",
    "init_normal_",
    "make_activation",
    "make_norm",
    "pad_to_multiple",
    "resize_to",
]
