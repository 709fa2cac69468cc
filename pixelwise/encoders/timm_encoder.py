"""Any timm backbone as an :class:`~.base.Encoder`: ``timm.create_model(name, features_only=True)``.

timm builds the network and reports each feature's channels and reduction (``feature_info``). Output
stride 8 or 16 comes from timm's own dilation support (ResNets, MobileNetV3, EfficientNets, ...); timm's
VGGs lack it, so for those this module gives the last max pools stride 1 (3×3, padding 1) and dilates
every later conv, as DeepLab did with VGG-16. ``multi_grid`` (DeepLab v3) sets per-block dilation rates
in a ResNet's last stage.

timm is always called with ``pretrained=False``: pixelwise never downloads. Pretrained weights are loaded
afterwards from local files by :func:`pixelwise.encoders.weights.load_encoder_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from torch import nn

from ..errors import PixelwiseError, first_line
from .base import Encoder

__all__ = ["TimmEncoder"]


class TimmEncoder(Encoder):
    """A timm ``features_only`` backbone.

    Args:
        name: timm model name (``resnet50``, ``tf_efficientnet_lite0``, ``vgg16_bn``, ...).
        in_channels: input image channels.
        output_stride: 8, 16 or 32; strides beyond it are replaced by dilation.
        multi_grid: per-block rate multipliers for the last stage of a ResNet (DeepLab v3's
            "Multi-grid", e.g. ``(1, 2, 4)``); empty for none.

    Attributes:
        model: the timm feature extractor (its state-dict keys are timm's, prefixed ``model.``).
    """

    def __init__(
        self,
        name: str,
        *,
        in_channels: int = 3,
        output_stride: int = 32,
        multi_grid: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise PixelwiseError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        if not timm.is_model(name):
            raise PixelwiseError(f"unknown encoder {name!r}: not a timm model name")
        self.name = name
        kwargs = {"features_only": True, "pretrained": False, "in_chans": in_channels}
        dilate_here = name.startswith("vgg") and output_stride != 32
        if output_stride != 32 and not dilate_here:
            kwargs["output_stride"] = output_stride
        try:
            self.model = timm.create_model(name, **kwargs)
        except (AssertionError, TypeError, ValueError, RuntimeError) as exc:
            raise PixelwiseError(
                f"encoder {name!r} cannot be built with output_stride={output_stride} "
                f"({first_line(exc)})"
            ) from None
        if dilate_here:
            _dilate_sequential(self.model, output_stride)
        self.channels = [int(c) for c in self.model.feature_info.channels()]
        self.reductions = [min(int(r), output_stride) for r in self.model.feature_info.reduction()]
        if multi_grid:
            _apply_multi_grid(self.model, name, tuple(multi_grid), output_stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


def _dilate_sequential(model: nn.Module, output_stride: int) -> None:
    """Replace strides beyond ``output_stride`` by dilation in a plain conv/pool stack (VGG)."""
    stride, dilation = 1, 1
    for module in model.modules():
        if isinstance(module, nn.MaxPool2d) and module.stride in (2, (2, 2)):
            if stride < output_stride:
                stride *= 2
            else:
                module.kernel_size, module.stride, module.padding = 3, 1, 1
                dilation *= 2
        elif isinstance(module, nn.Conv2d):
            if module.stride != (1, 1):
                raise PixelwiseError("cannot dilate an encoder with strided convolutions")
            if dilation > 1 and module.kernel_size[0] > 1:
                k = module.kernel_size[0]
                module.dilation = (dilation, dilation)
                module.padding = (dilation * (k - 1) // 2,) * 2


def _apply_multi_grid(
    model: nn.Module, name: str, grid: tuple[int, ...], output_stride: int
) -> None:
    """DeepLab v3's multi-grid: block i of the last stage gets rate ``base · grid[i]``."""
    stage = getattr(model, "layer4", None)
    if not isinstance(stage, nn.Sequential):
        raise PixelwiseError(
            f"multi_grid needs a ResNet encoder (a 'layer4' stage); {name!r} has none"
        )
    if len(grid) != len(stage):
        raise PixelwiseError(
            f"multi_grid {list(grid)} needs one rate per block of {name}'s last stage ({len(stage)})"
        )
    if any(int(g) < 1 for g in grid):
        raise PixelwiseError(f"multi_grid rates must be positive integers, got {list(grid)}")
    base = 32 // output_stride
    for block, unit in zip(stage, grid, strict=True):
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                rate = base * int(unit)
                conv.dilation = (rate, rate)
                conv.padding = (rate, rate)
