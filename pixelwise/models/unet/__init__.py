"""U-Net (Ronneberger et al. 2015)."""

from .decoder import UNetDecoder, UpBlock
from .model import UNet, unet

__all__ = ["UNet", "UNetDecoder", "UpBlock", "unet"]
