"""FCN-32s/16s/8s (Long et al. 2015)."""

from .decoder import FCNDecoder, FCNHead
from .model import fcn8s, fcn16s, fcn32s

__all__ = ["FCNDecoder", "FCNHead", "fcn8s", "fcn16s", "fcn32s"]
