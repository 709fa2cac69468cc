"""What every encoder-based architecture shares: any input size in, logits of that size out.

:class:`SegmentationModel` wires ``encoder → decoder → head`` and handles the input size once for all
architectures: it pads the input (bottom/right, zeros) to a multiple of the encoder's output stride so
every feature map has an exact size, resizes the logits bilinearly to the padded size when the head
predicts at a lower resolution, and crops the padding off.

An optional auxiliary head (PSPNet's deep supervision) predicts from another encoder feature during
training. ``model(x)`` always returns plain logits; ``model(x, return_aux=True)`` returns
``{"out": logits, "aux": aux_logits}`` and ``model.aux_weight`` says how much the auxiliary loss counts
(the training engine adds ``aux_weight · loss(aux_logits, target)``).
"""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import nn

from ..encoders import Encoder
from ..layers import pad_to_multiple, resize_to

__all__ = ["SegmentationModel", "build_encoder"]


class SegmentationModel(nn.Module):
    """Encoder + decoder + head, returning logits at the input's height and width.

    Args:
        encoder: backbone returning features ordered by stride.
        decoder: maps the list of features to one tensor (features or class scores).
        head: maps the decoder output to class scores at any stride (``nn.Identity`` when the decoder
            already predicts scores).
        num_classes: number of output channels.
        aux_head: optional module mapping ``features[aux_feature]`` to class scores.
        aux_feature: index of the encoder feature the auxiliary head reads.
        aux_weight: weight of the auxiliary loss (0 with no auxiliary head).

    Shape:
        x: (N, in_channels, H, W) → (N, num_classes, H, W) for any H, W.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: nn.Module,
        head: nn.Module,
        *,
        num_classes: int,
        aux_head: nn.Module | None = None,
        aux_feature: int = -2,
        aux_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        self.aux_head = aux_head
        self.aux_feature = aux_feature
        self.aux_weight = float(aux_weight) if aux_head is not None else 0.0
        self.num_classes = num_classes

    @overload
    def forward(self, x: torch.Tensor, *, return_aux: Literal[False] = ...) -> torch.Tensor: ...

    @overload
    def forward(self, x: torch.Tensor, *, return_aux: Literal[True]) -> dict[str, torch.Tensor]: ...

    @property
    def input_multiple(self) -> int:
        """Inputs are zero-padded (bottom/right) to a multiple of this inside :meth:`forward`."""
        return max(self.encoder.reductions)

    def forward(
        self, x: torch.Tensor, *, return_aux: bool = False
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[-2:]
        x, _ = pad_to_multiple(x, self.input_multiple)
        padded = x.shape[-2:]
        features = self.encoder(x)
        logits = _to_input(self.head(self.decoder(features)), padded, size)
        if not return_aux:
            return logits
        out = {"out": logits}
        if self.aux_head is not None:
            out["aux"] = _to_input(self.aux_head(features[self.aux_feature]), padded, size)
        return out


def _to_input(logits: torch.Tensor, padded: torch.Size, size: torch.Size) -> torch.Tensor:
    """Resize to the padded input size, then crop the padding off."""
    return resize_to(logits, padded)[..., : size[0], : size[1]]


def build_encoder(
    encoder: str,
    *,
    in_channels: int,
    output_stride: int | None,
    encoder_weights: str | None,
    multi_grid: tuple[int, ...] | list[int] = (),
) -> Encoder:
    """:func:`pixelwise.encoders.create_encoder` with the builders' argument names."""
    from ..encoders import create_encoder

    return create_encoder(
        encoder,
        in_channels=in_channels,
        output_stride=output_stride,
        weights=encoder_weights,
        multi_grid=tuple(multi_grid),
    )
