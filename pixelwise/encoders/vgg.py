"""The classic VGG-16 (Simonyan and Zisserman, ICLR 2015, arXiv:1409.1556) as the FCN and DeepLab papers
used it: 13 3×3 convolutions with ReLU (no batch norm) in five blocks, each closed by max pooling, and
the fully connected layers fc6/fc7 turned into convolutions.

Two variants, both loading torchvision's or timm's ImageNet VGG-16 weights (see :mod:`.weights`):

* ``vgg16`` — FCN (Long et al., CVPR 2015): 2×2 max pooling, fc6 a 7×7 conv with 4096 channels, fc7 a
  1×1 conv with 4096 channels, each followed by ReLU and dropout 0.5. Output stride 32.
* ``vgg16_largefov`` — DeepLab-LargeFOV (Chen et al., ICLR 2015, arXiv:1412.7062): 3×3 max pooling
  (stride 2, padding 1), pool4 and pool5 with stride 1 and conv5 dilated by 2 (output stride 8), fc6 a
  3×3 conv with 1024 channels and dilation 12, fc7 a 1×1 conv with 1024 channels. Pretrained fc6/fc7 are
  subsampled from the 4096-channel layers as the paper does (every 4th filter, every 3rd kernel tap).

For either, ``output_stride`` 8, 16 or 32 is reached by giving the last pools stride 1 (3×3, padding 1)
and dilating every later conv by the stride removed. fc6's dilation scales with it so that its field of
view is the same at every output stride: 32/os for the 7×7 fc6, 96/os for the 3×3 one (12 at 8).

Deviations (documented in docs/architectures.md): convolutions are zero-padded ("same"), so the original
FCN's 100-pixel padding of conv1_1 and the crop layers are not needed; pooling uses floor rounding
(Caffe used ceil), which makes no difference because models pad their input to a multiple of the stride.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PixelwiseError
from .base import Encoder

__all__ = ["VGG16Encoder", "VGG_VARIANTS"]

# torchvision's/timm's ``features`` layout: numbers are 3×3 conv widths, "M" a max pool.
_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"]
_CFG += [512, 512, 512, "M", 512, 512, 512, "M"]

# variant: (pool kernel, pool padding, fc6 kernel, fc channels, fc6 field-of-view constant)
VGG_VARIANTS: dict[str, tuple[int, int, int, int, int]] = {
    "fcn": (2, 0, 7, 4096, 32),
    "largefov": (3, 1, 3, 1024, 96),
}


class VGG16Encoder(Encoder):
    """VGG-16 with convolutionalised fc6/fc7.

    Args:
        in_channels: input image channels.
        output_stride: 8, 16 or 32 (default: 32 for ``fcn``, 8 for ``largefov``).
        variant: ``fcn`` (FCN's VGG-16) or ``largefov`` (DeepLab-LargeFOV's).
        dropout: dropout after fc6 and fc7 (both papers: 0.5).

    ``forward`` returns [pool1, pool2, pool3, pool4, fc7]: strides 2, 4, 8, 16, 32 at output stride 32.
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        output_stride: int | None = None,
        variant: str = "fcn",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if variant not in VGG_VARIANTS:
            raise PixelwiseError(
                f"unknown VGG-16 variant {variant!r}; choose one of {', '.join(VGG_VARIANTS)}"
            )
        pool_k, pool_p, fc6_k, fc_ch, fov = VGG_VARIANTS[variant]
        if output_stride is None:
            output_stride = 32 if variant == "fcn" else 8
        if output_stride not in (8, 16, 32):
            raise PixelwiseError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        self.variant = variant

        layers: list[nn.Module] = []
        taps, channels, reductions = [], [], []
        prev, stride, dilation = in_channels, 1, 1
        for v in _CFG:
            if v == "M":
                if stride < output_stride:
                    layers.append(nn.MaxPool2d(pool_k, stride=2, padding=pool_p))
                    stride *= 2
                else:  # atrous: keep the resolution, dilate what follows
                    layers.append(nn.MaxPool2d(3, stride=1, padding=1))
                    dilation *= 2
                taps.append(len(layers) - 1)
                channels.append(prev)
                reductions.append(stride)
            else:
                layers.append(nn.Conv2d(prev, v, 3, padding=dilation, dilation=dilation))
                layers.append(nn.ReLU(inplace=True))
                prev = int(v)
        self.features = nn.Sequential(*layers)
        self._taps = taps[:-1]  # pool5 feeds fc6; fc7 is the deepest feature instead

        d6 = fov // output_stride
        self.fc6 = nn.Conv2d(prev, fc_ch, fc6_k, padding=d6 * (fc6_k - 1) // 2, dilation=d6)
        self.fc7 = nn.Conv2d(fc_ch, fc_ch, 1)
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        self.act = nn.ReLU(inplace=True)
        self.channels = channels[:-1] + [fc_ch]
        self.reductions = reductions
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        taps = set(self._taps)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                features.append(x)
        x = self.drop6(self.act(self.fc6(x)))
        x = self.drop7(self.act(self.fc7(x)))
        features.append(x)
        return features
