"""Class weights from a split's pixel counts, for losses on imbalanced classes.

Three schemes, each as its paper normalises it (scaling all weights changes no pixelwise loss):

* ``inverse_frequency``: ``w_c = N / (K n_c)``, N the labelled pixels, K the classes present, n_c the
  pixels of class c (scikit-learn's "balanced"): every class gets the same total weight.
* ``median_frequency`` (Eigen and Fergus, ICCV 2015; SegNet on CamVid): ``w_c = median(f) / f_c`` with
  ``f_c = n_c / P_c``, P_c the labelled pixels of the images in which c appears (when per-image totals
  are not known, P_c = N). The class of median frequency gets weight 1.
* ``effective_number`` (Cui et al., CVPR 2019): ``w_c ∝ (1 - beta) / (1 - beta^n_c)``, normalised to sum
  to K. ``beta → 1`` tends to inverse frequency, ``beta = 0`` to uniform; with millions of pixels per
  class ``beta`` must be very close to 1 (e.g. ``1 - 1e-6``) to differ from uniform.

A class with no pixels gets weight 0 (it has nothing to weight and would otherwise be infinite).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ..errors import PixelwiseError

__all__ = [
    "WEIGHT_SCHEMES",
    "WeightScheme",
    "inverse_frequency",
    "median_frequency",
    "effective_number",
    "class_weights",
]

WeightScheme = Literal["inverse_frequency", "median_frequency", "effective_number"]
WEIGHT_SCHEMES: tuple[str, ...] = ("inverse_frequency", "median_frequency", "effective_number")


def _counts(class_pixels: np.ndarray | list[int]) -> np.ndarray:
    n = np.asarray(class_pixels, dtype=np.float64).reshape(-1)
    if n.size == 0 or (n < 0).any() or not np.isfinite(n).all():
        raise PixelwiseError(f"class pixel counts must be non-negative numbers, got {n.tolist()}")
    if not (n > 0).any():
        raise PixelwiseError("no labelled pixels: class weights cannot be computed")
    return n


def inverse_frequency(class_pixels: np.ndarray | list[int]) -> np.ndarray:
    """``N / (K n_c)`` for present classes, 0 for absent ones.

    Shape:
        class_pixels: (C,) → (C,).
    """
    n = _counts(class_pixels)
    present = n > 0
    w = np.zeros_like(n)
    w[present] = n.sum() / (present.sum() * n[present])
    return w


def median_frequency(
    class_pixels: np.ndarray | list[int], image_pixels: np.ndarray | list[int] | None = None
) -> np.ndarray:
    """``median(f) / f_c``, ``f_c = n_c / P_c``.

    Args:
        class_pixels: labelled pixels of each class, n_c.
        image_pixels: labelled pixels of the images containing each class, P_c; ``None`` uses the
            split's total for every class.

    Shape:
        class_pixels, image_pixels: (C,) → (C,).
    """
    n = _counts(class_pixels)
    if image_pixels is None:
        p = np.full_like(n, n.sum())
    else:
        p = np.asarray(image_pixels, dtype=np.float64).reshape(-1)
        if p.shape != n.shape or (p < n).any():
            raise PixelwiseError(
                "image_pixels must have one total per class, each at least that class's pixel count"
            )
    present = n > 0
    f = np.zeros_like(n)
    f[present] = n[present] / p[present]
    w = np.zeros_like(n)
    w[present] = np.median(f[present]) / f[present]
    return w


def effective_number(class_pixels: np.ndarray | list[int], beta: float = 0.9999) -> np.ndarray:
    """``(1 - beta) / (1 - beta^n_c)`` normalised to sum to the number of present classes.

    Shape:
        class_pixels: (C,) → (C,).
    """
    if not 0.0 <= beta < 1.0:
        raise PixelwiseError(f"effective_number: beta must lie in [0, 1), got {beta}")
    n = _counts(class_pixels)
    present = n > 0
    w = np.zeros_like(n)
    if beta == 0.0:
        w[present] = 1.0
    else:
        # 1 - beta^n computed as -expm1(n log beta): exact for beta near 1 and huge n
        effective = -np.expm1(n[present] * math.log(beta)) / (1.0 - beta)
        w[present] = 1.0 / effective
    return w * present.sum() / w.sum()


def class_weights(
    scheme: str,
    class_pixels: np.ndarray | list[int],
    *,
    image_pixels: np.ndarray | list[int] | None = None,
    beta: float = 0.9999,
) -> list[float]:
    """The weights of ``scheme`` (one of :data:`WEIGHT_SCHEMES`) as a list of floats.

    Args:
        scheme: ``inverse_frequency``, ``median_frequency`` or ``effective_number``.
        class_pixels: labelled pixels per class.
        image_pixels: per class, labelled pixels of the images it appears in (median frequency).
        beta: the effective-number hyper-parameter.
    """
    if scheme == "inverse_frequency":
        w = inverse_frequency(class_pixels)
    elif scheme == "median_frequency":
        w = median_frequency(class_pixels, image_pixels)
    elif scheme == "effective_number":
        w = effective_number(class_pixels, beta)
    else:
        raise PixelwiseError(
            f"unknown class-weight scheme {scheme!r}; available: {', '.join(WEIGHT_SCHEMES)}"
        )
    return [float(x) for x in w]
