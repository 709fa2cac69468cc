"""PSPNet (Zhao et al. 2017)."""

from .decoder import PSPAuxHead, PSPDecoder
from .model import pspnet

__all__ = ["PSPAuxHead", "PSPDecoder", "pspnet"]
