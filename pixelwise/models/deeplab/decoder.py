"""DeepLab decoders, built from the encoder's channels: v1's identity, v2's summed ASPP, v3's ASPP
head and v3+'s ASPP + low-level-feature decoder."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from ...errors import PixelwiseError
from ...layers import ASPP, ConvNormAct, SeparableConvNormAct, SummedASPP, resize_to

__all__ = ["DeepestFeature", "DeepLabV2Decoder", "DeepLabV3Decoder", "DeepLabV3PlusDecoder"]


class DeepestFeature(nn.Module):
    """The encoder's deepest feature, unchanged (DeepLab v1 classifies fc7 directly)."""

    def __init__(self, encoder_channels: list[int]) -> None:
        super().__init__()
        self.out_channels = encoder_channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return features[-1]


class DeepLabV2Decoder(nn.Module):
    """DeepLab v2's ASPP-L on the deepest feature: summed class scores of atrous 3×3 branches.

    Shape:
        features → (N, num_classes, h, w), h × w the size of the deepest feature.
    """

    def __init__(self, encoder_channels: list[int], num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.aspp = SummedASPP(encoder_channels[-1], num_classes, rates)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.aspp(features[-1])


class DeepLabV3Decoder(nn.Module):
    """DeepLab v3's head: ASPP on the deepest feature, then ``head_convs`` 3×3 conv-norm-ReLU layers.

    The paper has no 3×3 conv after the ASPP projection (``head_convs=0``); torchvision's and
    segmentation_models_pytorch's DeepLabV3 add one (``head_convs=1``).

    Shape:
        features → (N, channels, h, w), h × w the size of the deepest feature.
    """

    def __init__(
        self,
        encoder_channels: list[int],
        *,
        channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        separable: bool = False,
        head_convs: int = 0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(
            encoder_channels[-1], channels, rates, separable=separable, dropout=dropout
        )
        self.convs = nn.Sequential(*(ConvNormAct(channels, channels, 3) for _ in range(head_convs)))
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.convs(self.aspp(features[-1]))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLab v3+'s decoder: ASPP output upsampled to the low-level feature's stride, concatenated with
    that feature reduced to ``low_level_channels`` by a 1×1 conv-norm-ReLU, then two 3×3 conv-norm-ReLU
    (depthwise separable with ``separable``).

    ``fuse_convs=1, aspp_head_convs=1, separable_style="xception"`` builds
    segmentation_models_pytorch's decoder (one separable 3×3 after the ASPP, one after the concatenation,
    no norm inside the separable convs).

    Args:
        encoder_channels: channels of the encoder features, shallowest first.
        low_level_index: which encoder feature supplies the low-level detail (stride 4 in the paper).
        channels: width of the ASPP and of the decoder convs (the paper: 256).
        low_level_channels: width of the reduced low-level feature (the paper: 48).
        rates: ASPP rates.
        separable: depthwise-separable ASPP and decoder convs.
        separable_style: ``tf`` (the paper's reference code) or ``xception``.
        fuse_convs: 3×3 convs after the concatenation (the paper: 2).
        aspp_head_convs: 3×3 convs after the ASPP projection (the paper: 0).
        dropout: dropout after the ASPP projection.

    Shape:
        features → (N, channels, h, w), h × w the size of ``features[low_level_index]``.
    """

    def __init__(
        self,
        encoder_channels: list[int],
        *,
        low_level_index: int,
        channels: int = 256,
        low_level_channels: int = 48,
        rates: Sequence[int] = (6, 12, 18),
        separable: bool = False,
        separable_style: str = "tf",
        fuse_convs: int = 2,
        aspp_head_convs: int = 0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if fuse_convs < 1 or aspp_head_convs < 0:
            raise PixelwiseError(
                f"fuse_convs must be >= 1 and aspp_head_convs >= 0, got {fuse_convs} and "
                f"{aspp_head_convs}"
            )
        self.aspp = ASPP(
            encoder_channels[-1],
            channels,
            rates,
            separable=separable,
            separable_style=separable_style,
            dropout=dropout,
        )
        block = partial(SeparableConvNormAct, style=separable_style) if separable else ConvNormAct
        self.aspp_head = nn.Sequential(
            *(block(channels, channels, 3) for _ in range(aspp_head_convs))
        )
        self.low_level_index = low_level_index
        self.reduce = ConvNormAct(encoder_channels[low_level_index], low_level_channels, 1)
        self.fuse = nn.Sequential(
            block(channels + low_level_channels, channels, 3),
            *(block(channels, channels, 3) for _ in range(fuse_convs - 1)),
        )
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low = self.reduce(features[self.low_level_index])
        x = resize_to(self.aspp_head(self.aspp(features[-1])), low.shape[-2:])
        return self.fuse(torch.cat([x, low], dim=1))
