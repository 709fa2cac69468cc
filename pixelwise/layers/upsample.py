"""Learned upsampling: transposed convolutions initialised to bilinear interpolation (FCN).

Long et al. (FCN, CVPR 2015) upsample class scores "in-network" with backwards-strided (transposed)
convolutions whose kernels start as bilinear interpolation. Caffe's layers hold a full C×C kernel with
the bilinear filter on the diagonal and zeros elsewhere; here each class gets its own kernel
(``groups=channels``), which computes the same function at initialisation with C times fewer weights.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["bilinear_kernel", "BilinearConvTranspose2d"]


def bilinear_kernel(size: int) -> torch.Tensor:
    """The ``size``×``size`` bilinear interpolation kernel (Caffe's ``upsample_filt``)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    return filt[:, None] * filt[None, :]


class BilinearConvTranspose2d(nn.ConvTranspose2d):
    """Per-channel transposed convolution that upsamples by an integer ``factor``, bilinear at start.

    Kernel ``2·factor``, stride ``factor``, padding ``factor / 2``: an H×W input gives exactly
    ``factor·H × factor·W``. ``learnable=False`` freezes the kernel (as the reference Caffe FCNs do).

    Shape:
        x: (N, C, H, W) → (N, C, factor·H, factor·W).
    """

    def __init__(self, channels: int, factor: int, *, learnable: bool = True) -> None:
        if factor < 2 or factor % 2:
            raise ValueError(f"upsampling factor must be an even integer >= 2, got {factor}")
        super().__init__(
            channels,
            channels,
            kernel_size=2 * factor,
            stride=factor,
            padding=factor // 2,
            groups=channels,
            bias=False,
        )
        self.factor = factor
        self.reset_parameters()
        self.weight.requires_grad_(learnable)

    def reset_parameters(self) -> None:
        # nn.ConvTranspose2d.__init__ calls this before ``factor`` exists; __init__ calls it again
        if not hasattr(self, "factor"):
            return
        with torch.no_grad():
            kernel = bilinear_kernel(self.kernel_size[0]).to(self.weight.device, self.weight.dtype)
            self.weight.copy_(kernel.expand_as(self.weight))
