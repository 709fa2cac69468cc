"""Model size and cost, measured rather than typed in: parameters and FLOPs of one forward pass.

Models are built on PyTorch's ``meta`` device (shapes only: nothing is allocated or computed) and run
once under :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the FLOPs of convolutions,
transposed convolutions and matrix products from their shapes — 2 FLOPs per multiply-add; pooling,
normalisation, activations and resizing are not counted. Inference mode: auxiliary heads are not run.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..encoders import create_encoder
from ..registry import create_model, model_builder

__all__ = ["Complexity", "default_encoder", "encoder_complexity", "measure", "model_complexity"]


@dataclass(frozen=True)
class Complexity:
    """Parameters and forward FLOPs (2 per multiply-add) of one image at ``size``."""

    params: int
    flops: int
    size: tuple[int, int]
    output_stride: int | None = None
    channels: tuple[int, ...] = ()  # encoders: the channels of their features

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def measure(model: nn.Module, in_channels: int, size: tuple[int, int]) -> tuple[int, int]:
    """``(parameters, FLOPs)`` of ``model`` on one ``in_channels``×H×W input, on ``model``'s device."""
    device = next(iter(model.parameters())).device
    x = torch.zeros(1, in_channels, *size, device=device)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return sum(p.numel() for p in model.parameters()), int(counter.get_total_flops())


def model_complexity(
    name: str, *, size: int | tuple[int, int] = 512, num_classes: int = 11, **kwargs: Any
) -> Complexity:
    """Measure registered architecture ``name`` built with ``kwargs`` (no weights are loaded)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    kwargs = {k: v for k, v in kwargs.items() if k != "encoder_weights"}
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs)
    in_channels = int(kwargs.get("in_channels") or 3)
    params, flops = measure(model, in_channels, hw)
    encoder = getattr(model, "encoder", None)
    os = int(max(encoder.reductions)) if encoder is not None else None
    return Complexity(params, flops, hw, os)


def encoder_complexity(
    name: str, *, size: int | tuple[int, int] = 512, output_stride: int | None = None
) -> Complexity:
    """Measure encoder ``name`` alone (no weights are loaded)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    with torch.device("meta"):
        encoder = create_encoder(name, output_stride=output_stride)
    params, flops = measure(encoder, 3, hw)
    return Complexity(params, flops, hw, int(max(encoder.reductions)), tuple(encoder.channels))


def default_encoder(name: str) -> str | None:
    """The default ``encoder`` argument of architecture ``name`` (``None`` if it takes none)."""
    p = inspect.signature(model_builder(name)).parameters.get("encoder")
    return None if p is None else p.default
