"""U-Net (Ronneberger et al. 2015): the original (``unet``) and on any encoder (``unet_encoder``)."""

from .decoder import EncoderUNetDecoder, ResizeUpBlock, UNetDecoder, UpBlock
from .model import UNet, unet, unet_encoder

__all__ = [
    "EncoderUNetDecoder",
    "ResizeUpBlock",
    "UNet",
    "UNetDecoder",
    "UpBlock",
    "unet",
    "unet_encoder",
]
