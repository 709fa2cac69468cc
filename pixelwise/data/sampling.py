"""Rare-class oversampling: per-image sampling weights from per-image class pixel counts.

Rare class sampling (RCS) after Hoyer et al., *DAFormer* (CVPR 2022), §3.3: a class ``c`` is drawn
with probability

    P(c) = exp((1 - f_c) / T) / sum_c' exp((1 - f_c') / T)

where ``f_c`` is the class's share of the labelled pixels of the split and ``T`` a temperature
(0.01 in the paper; smaller draws the rarest classes more), then an image holding ``c`` is drawn
uniformly. An image "holds" ``c`` when at least ``min_share`` of its labelled pixels are ``c``
(speckles of a pixel or two, which real annotations have in every class, do not count).

DAFormer samples only that way, so an image holding no rare class is almost never seen. pixelwise
keeps ``1 - share`` of the draws uniform (every image stays in training) and draws ``share`` by RCS:

    w_i = (1 - share) / n + share * sum_{c held by i} P(c) / n_c

with ``n`` images and ``n_c`` the images holding ``c`` (classes held by no image are left out of
``P``). The weights sum to 1; the training loop draws ``samples_per_epoch`` (or ``n``) images per
epoch with replacement from them, seeded by the epoch (:func:`pixelwise.engine.train.train_order`).
"""

from __future__ import annotations

import numpy as np

from ..errors import PixelwiseError

__all__ = ["rare_class_weights", "class_draw_probabilities"]


def class_draw_probabilities(frequency: np.ndarray, temperature: float) -> np.ndarray:
    """DAFormer's P(c) = softmax((1 - f_c) / T) over the classes, for pixel shares ``frequency``."""
    if temperature <= 0:
        raise PixelwiseError(f"rare class sampling: temperature must be > 0, got {temperature}")
    z = (1.0 - np.asarray(frequency, dtype=np.float64)) / temperature
    e = np.exp(z - z.max())  # shifted: the same softmax without overflow
    return e / e.sum()


def rare_class_weights(
    class_pixels: np.ndarray, *, temperature: float, min_share: float, share: float
) -> np.ndarray:
    """Per-image sampling weights (summing to 1) from an ``(images, classes)`` array of labelled
    pixel counts (module docstring for the formula).

    Args:
        class_pixels: labelled pixels of each class in each image (ignored pixels excluded).
        temperature: T of P(c); > 0.
        min_share: an image holds a class when the class has at least this share of its labelled
            pixels (and at least one pixel).
        share: the part of the draws made by RCS, in [0, 1]; the rest is uniform.
    """
    counts = np.asarray(class_pixels, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise PixelwiseError(
            f"rare class sampling: expected (images, classes) pixel counts, got shape {counts.shape}"
        )
    if not 0.0 <= share <= 1.0 or not 0.0 <= min_share < 1.0:
        raise PixelwiseError(
            f"rare class sampling: share ({share}) must be in [0, 1] and min_share ({min_share}) "
            "in [0, 1)"
        )
    n = counts.shape[0]
    per_image = counts.sum(axis=1, keepdims=True)
    holds = (counts > 0) & (counts >= min_share * per_image)
    n_c = holds.sum(axis=0)
    uniform = np.full(n, 1.0 / n)
    total = counts.sum()
    if total == 0 or not n_c.any() or share == 0:
        return uniform
    p = np.zeros(counts.shape[1])
    kept = n_c > 0
    p[kept] = class_draw_probabilities(counts.sum(axis=0)[kept] / total, temperature)
    rcs = (holds * (p / np.maximum(n_c, 1))).sum(axis=1)
    return (1.0 - share) * uniform + share * rcs
