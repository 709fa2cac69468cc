"""The encoder contract every backbone follows.

``forward(x)`` returns a list of feature maps ordered by stride (shallowest first). ``channels[i]`` and
``reductions[i]`` describe ``features[i]``: its channel count and its stride relative to the input.
Decoders are built from ``channels`` and never hard-code a number; dilation for a smaller output stride
lives inside the encoder.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Encoder"]


class Encoder(nn.Module):
    """Base class: subclasses set ``channels`` and ``reductions`` and implement ``forward``."""

    channels: list[int]
    reductions: list[int]

    @property
    def output_stride(self) -> int:
        """Stride of the deepest feature map."""
        return self.reductions[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
