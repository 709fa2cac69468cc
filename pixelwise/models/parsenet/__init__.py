"""ParseNet (Liu et al. 2015)."""

from .decoder import ParseNetContext
from .model import parsenet

__all__ = ["ParseNetContext", "parsenet"]
