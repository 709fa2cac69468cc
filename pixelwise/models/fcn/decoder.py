"""FCN's decoder: 1×1 class-score layers, skip fusion by summation, bilinear-initialised upsampling."""

from __future__ import annotations

import torch
from torch import nn

from ...layers import BilinearConvTranspose2d, ConvNormAct

__all__ = ["FCNHead", "FCNDecoder"]


class FCNHead(nn.Sequential):
    """A 3×3 conv-norm-ReLU + dropout in front of the score layer, for encoders without fc6/fc7.

    The same block as torchvision's ``FCNHead`` minus its classifier (in_channels → in_channels / 4
    there); it stands in for VGG-16's convolutionalised fully connected layers.
    """

    def __init__(self, in_channels: int, channels: int, *, dropout: float = 0.1) -> None:
        super().__init__(ConvNormAct(in_channels, channels, 3), nn.Dropout(dropout))
        self.out_channels = channels


class FCNDecoder(nn.Module):
    """Score the deepest feature, fuse the scores of ``skips`` shallower features, upsample to stride 1.

    FCN-32s is ``skips=0``; FCN-16s adds the score of the next feature (pool4 on VGG-16); FCN-8s also
    the one after (pool3). Between two levels the coarser scores are upsampled by a transposed conv
    initialised to bilinear interpolation (factor = ratio of the reductions; none when they are equal,
    as with a dilated encoder) and summed; a last transposed conv upsamples to the input resolution.
    Score layers start at zero, as in the paper.

    Args:
        encoder_channels: channels of the encoder features, shallowest first.
        encoder_reductions: their strides.
        num_classes: output classes.
        skips: 0, 1 or 2.
        head_channels: width of an :class:`FCNHead` before the deepest score layer; 0 for none.
        learn_upsampling: train the upsampling kernels (``False`` freezes them at bilinear).

    Shape:
        features → (N, num_classes, r·h, r·w) with h × w the size of ``features[-1 - skips]`` and r its
        reduction: the padded input size.
    """

    def __init__(
        self,
        encoder_channels: list[int],
        encoder_reductions: list[int],
        num_classes: int,
        *,
        skips: int = 0,
        head_channels: int = 0,
        learn_upsampling: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= skips < len(encoder_channels):
            raise ValueError(f"skips must be between 0 and {len(encoder_channels) - 1}")
        deepest = encoder_channels[-1]
        self.head = FCNHead(deepest, head_channels) if head_channels > 0 else nn.Identity()
        self.score = nn.Conv2d(head_channels or deepest, num_classes, 1)
        levels = list(range(len(encoder_channels) - 2, len(encoder_channels) - 2 - skips, -1))
        self.skip_scores = nn.ModuleList(
            nn.Conv2d(encoder_channels[i], num_classes, 1) for i in levels
        )
        self.skip_index = levels
        ups, r = [], encoder_reductions[-1]
        for i in levels:
            ups.append(_upsampler(num_classes, r // encoder_reductions[i], learn_upsampling))
            r = encoder_reductions[i]
        self.ups = nn.ModuleList(ups)
        self.final_up = _upsampler(num_classes, r, learn_upsampling)
        for conv in [self.score, *self.skip_scores]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        scores = self.score(self.head(features[-1]))
        for i, skip_score, up in zip(self.skip_index, self.skip_scores, self.ups, strict=True):
            scores = up(scores) + skip_score(features[i])
        return self.final_up(scores)


def _upsampler(channels: int, factor: int, learnable: bool) -> nn.Module:
    return (
        BilinearConvTranspose2d(channels, factor, learnable=learnable)
        if factor > 1
        else nn.Identity()
    )
