"""Convolution + normalisation + activation, and the factories that resolve their names."""

from __future__ import annotations

from torch import nn

from ..errors import PixelwiseError

__all__ = [
    "SEPARABLE_STYLES",
    "make_norm",
    "make_activation",
    "ConvNormAct",
    "SeparableConvNormAct",
    "init_normal_",
]

_NORMS = ("batchnorm", "groupnorm", "instancenorm", "none")
_ACTS = ("relu", "silu", "gelu", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``batchnorm``, ``groupnorm`` (32 groups or fewer), ``instancenorm``, ``none``."""
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "groupnorm":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "instancenorm":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise PixelwiseError(f"unknown norm {norm!r}; choose one of {', '.join(_NORMS)}")


def make_activation(act: str) -> nn.Module:
    """Activation by name: ``relu``, ``silu``, ``gelu``, ``none``."""
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "silu":
        return nn.SiLU(inplace=True)
    if act == "gelu":
        return nn.GELU()
    if act == "none":
        return nn.Identity()
    raise PixelwiseError(f"unknown activation {act!r}; choose one of {', '.join(_ACTS)}")


def init_normal_(conv: nn.Conv2d, std: float = 0.01) -> nn.Conv2d:
    """Weights drawn from N(0, std²) and a zero bias, in place, as the Caffe reference models (DeepLab,
    ParseNet) initialise their classifiers; returns ``conv``."""
    nn.init.normal_(conv.weight, std=std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (bias only without a norm) → norm → activation, "same" padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: str = "batchnorm",
        act: str = "relu",
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=norm == "none",
            ),
            make_norm(norm, out_channels),
            make_activation(act),
        )


SEPARABLE_STYLES = ("tf", "xception")


class SeparableConvNormAct(nn.Sequential):
    """Depthwise-separable conv (DeepLab v3+'s "atrous separable convolution").

    ``style="tf"`` (the reference TensorFlow DeepLab): a depthwise ``kernel_size`` conv (dilated) →
    norm → activation, then a pointwise 1×1 conv → norm → activation. ``style="xception"`` (Keras'
    ``SeparableConv2D``, segmentation_models_pytorch's ``SeparableConv2d``): depthwise then pointwise
    with nothing between them, then norm → activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        dilation: int = 1,
        norm: str = "batchnorm",
        act: str = "relu",
        style: str = "tf",
    ) -> None:
        if style not in SEPARABLE_STYLES:
            raise PixelwiseError(
                f"unknown separable style {style!r}; choose one of {', '.join(SEPARABLE_STYLES)}"
            )
        inner = "none" if style == "xception" else norm
        depthwise = ConvNormAct(
            in_channels,
            in_channels,
            kernel_size,
            dilation=dilation,
            groups=in_channels,
            norm=inner,
            act=act if style == "tf" else "none",
        )
        if style == "xception":
            depthwise[0].bias = None  # no bias between the two halves
        super().__init__(depthwise, ConvNormAct(in_channels, out_channels, 1, norm=norm, act=act))
