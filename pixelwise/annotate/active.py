"""Active learning: rank unlabelled images by how unsure a model is of them, so that the images an
annotator labels first are the ones the model would learn most from (uncertainty sampling; Lewis and
Gale 1994; for segmentation, per-pixel scores averaged over the image as in Settles' survey, 2009).

Every score is computed from the class probabilities of
:meth:`~pixelwise.engine.predictor.Segmenter.segment_batch` — the one prediction path, with the
segmenter's precision, test-time augmentation, tiling and CRF — and normalised to [0, 1] so that 1 is
a uniform distribution over the K classes and 0 a certain one:

* ``entropy``: −Σ p log p / log K;
* ``margin``: 1 − (p₁ − p₂), the gap between the two most probable classes;
* ``least_confident``: (1 − p₁) / (1 − 1/K).

:func:`uncertainty_map` gives the per-pixel map (the annotation page's heat map),
:func:`image_uncertainty` its mean, :func:`rank_by_uncertainty` the most uncertain images first and
:func:`random_order` the baseline that uncertainty sampling is measured against
(``docs/active_learning.md``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import PixelwiseError

if TYPE_CHECKING:
    from ..engine.predictor import Segmenter

__all__ = [
    "UNCERTAINTY_KINDS",
    "image_uncertainty",
    "rank_by_uncertainty",
    "random_order",
    "uncertainty_map",
]

ImageSource = Sequence[str | os.PathLike[str]] | Mapping[str, np.ndarray]


# ---- per-pixel scores: (..., K, H, W) probabilities → (..., H, W) in [0, 1] --------------------------


def _entropy(probs: np.ndarray) -> np.ndarray:
    k = probs.shape[-3]
    p = probs.astype(np.float32, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -plogp.sum(axis=-3) / np.float32(np.log(k))


def _margin(probs: np.ndarray) -> np.ndarray:
    k = probs.shape[-3]
    top2 = np.partition(probs.astype(np.float32, copy=False), k - 2, axis=-3)[..., k - 2 :, :, :]
    return 1.0 - (top2[..., 1, :, :] - top2[..., 0, :, :])


def _least_confident(probs: np.ndarray) -> np.ndarray:
    k = probs.shape[-3]
    return (1.0 - probs.astype(np.float32, copy=False).max(axis=-3)) / np.float32(1.0 - 1.0 / k)


_KINDS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "entropy": _entropy,
    "margin": _margin,
    "least_confident": _least_confident,
}

UNCERTAINTY_KINDS: tuple[str, ...] = tuple(_KINDS)


def _score_fn(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    if kind not in _KINDS:
        raise PixelwiseError(
            f"unknown uncertainty kind {kind!r}; use {', '.join(UNCERTAINTY_KINDS)}"
        )
    return _KINDS[kind]


def uncertainty_map(probs: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Per-pixel uncertainty of class probabilities, in [0, 1]: 1 where the K classes are equally
    likely, 0 where one class has probability 1.

    Args:
        probs: class probabilities summing to 1 over the class axis (a
            :class:`~pixelwise.engine.predictor.Prediction`'s ``probs``).
        kind: ``entropy`` (normalised by log K), ``margin`` (1 − (p₁ − p₂)) or
            ``least_confident`` ((1 − p₁) / (1 − 1/K)).

    Returns:
        float32 uncertainty.

    Shape:
        probs: (K, H, W) or (N, K, H, W), K ≥ 2. Returns (H, W) or (N, H, W).

    Raises:
        PixelwiseError: an unknown ``kind``, or fewer than two classes or three axes.
    """
    fn = _score_fn(kind)
    probs = np.asarray(probs)
    if probs.ndim not in (3, 4) or probs.shape[-3] < 2:
        raise PixelwiseError(
            f"uncertainty needs K×H×W or N×K×H×W probabilities with K ≥ 2, got shape {probs.shape}"
        )
    return np.clip(fn(probs), 0.0, 1.0).astype(np.float32, copy=False)


def image_uncertainty(probs: np.ndarray, kind: str = "entropy") -> float:
    """One image's uncertainty: the mean of its :func:`uncertainty_map`, in [0, 1].

    Shape:
        probs: (K, H, W).
    """
    return float(uncertainty_map(probs, kind).mean(dtype=np.float64))


# ---- ranking -----------------------------------------------------------------------------------------


def _items(images: ImageSource) -> list[tuple[str, Path | np.ndarray]]:
    if isinstance(images, Mapping):
        return [(str(k), v) for k, v in images.items()]
    return [(str(p), Path(p)) for p in images]


def _same_size_batches(
    items: list[tuple[str, Path | np.ndarray]], batch_size: int, channels: int
) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Consecutive items decoded and grouped into batches of at most ``batch_size`` same-size
    images (a change of size starts a new batch)."""
    from ..data.io import read_image

    batch: list[tuple[str, np.ndarray]] = []
    for key, source in items:
        image = read_image(source, channels) if isinstance(source, Path) else source
        if batch and (len(batch) == batch_size or batch[0][1].shape != image.shape):
            yield batch
            batch = []
        batch.append((key, image))
    if batch:
        yield batch


def rank_by_uncertainty(
    segmenter: Segmenter,
    images: ImageSource,
    *,
    kind: str = "entropy",
    batch_size: int = 4,
    progress: bool = False,
) -> list[tuple[str, float]]:
    """Score unlabelled images with ``segmenter`` and order them most uncertain first.

    Each image's score is :func:`image_uncertainty` of the probabilities that
    :meth:`Segmenter.segment_batch` gives (so with the segmenter's precision, TTA, tiling and CRF).
    Ties keep the order of ``images``, so a ranking is a function of the scores alone.

    Args:
        segmenter: the model to ask.
        images: image files (each keyed by its path as given, as a string), or a mapping of ids to
            uint8 H×W×C arrays.
        kind: one of :data:`UNCERTAINTY_KINDS`.
        batch_size: images per forward pass (consecutive same-size images are batched).
        progress: show a progress bar.

    Returns:
        ``(id, score)`` pairs, highest score first; scores in [0, 1].

    Raises:
        PixelwiseError: an unknown ``kind``, ``batch_size`` below 1, or an unreadable image.
    """
    _score_fn(kind)
    if batch_size < 1:
        raise PixelwiseError(f"batch_size must be at least 1, got {batch_size}")
    items = _items(images)
    from tqdm import tqdm

    scores: list[tuple[str, float]] = []
    bar = tqdm(total=len(items), desc="uncertainty", disable=not progress, unit="image")
    with bar:
        for batch in _same_size_batches(items, batch_size, segmenter.meta.in_channels):
            preds = segmenter.segment_batch([im for _, im in batch], probs=True)
            for (key, _), pred in zip(batch, preds, strict=True):
                scores.append((key, image_uncertainty(pred.probs, kind)))  # type: ignore[arg-type]
            bar.update(len(batch))
    return sorted(scores, key=lambda item: -item[1])  # stable: ties keep the input order


def random_order(ids: Sequence[str], *, seed: int = 0) -> list[str]:
    """The baseline: ``ids`` in a random order fixed by ``seed`` (the same on every machine)."""
    order = list(ids)
    random.Random(seed).shuffle(order)
    return order
