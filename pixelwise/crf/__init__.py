"""Dense CRF post-processing (Krähenbühl and Koltun 2011), as DeepLab v1 used it.

::

    from pixelwise.crf import CRFParams, DenseCRF
    crf = DenseCRF(CRFParams(iterations=5))
    out = crf(image, logits=logits)          # out.probs C×H×W, out.labels H×W
"""

from .dense import CRFParams, CRFResult, DenseCRF, crf_memory_bytes, dense_crf
from .lattice import Lattice, build_lattice

__all__ = [
    "CRFParams",
    "CRFResult",
    "DenseCRF",
    "Lattice",
    "build_lattice",
    "crf_memory_bytes",
    "dense_crf",
]
