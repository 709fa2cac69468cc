"""How logits become class probabilities and labels — the one place that decides it.

A model's logits are N×C×H×W. With C > 1 they are softmax class scores; with C == 1 the model is a binary
sigmoid model whose one channel ``z`` scores class 1 (foreground) against class 0 (background). A
one-channel logit ``z`` is exactly the two-class logit pair ``(0, z)``: ``softmax(0, z) = (σ(-z), σ(z))``.
Losses, validation, evaluation and prediction all go through :func:`two_class_logits`,
:func:`log_probabilities`, :func:`probabilities` and :func:`labels`, so a sigmoid model is trained,
measured and shipped the same way as a softmax one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import PixelwiseError

__all__ = [
    "two_class_logits",
    "log_probabilities",
    "probabilities",
    "labels",
    "labels_from_probabilities",
    "logit_threshold",
]


def two_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` unchanged when C > 1; ``(0, z)`` stacked on the channel axis when C == 1.

    Shape:
        logits: (N, C, H, W) → (N, max(C, 2), H, W).
    """
    if logits.ndim < 2:
        raise PixelwiseError(
            f"logits need a channel axis (N, C, ...), got shape {tuple(logits.shape)}"
        )
    if logits.shape[1] != 1:
        return logits
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Per-class log-probabilities, in at least float32 (float64 stays float64).

    Shape:
        logits: (N, C, H, W) → (N, K, H, W) with K = C, or K = 2 for a one-channel (sigmoid) model.
    """
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.log_softmax(two_class_logits(x), dim=1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Per-class probabilities (softmax; ``(1 - σ(z), σ(z))`` for a one-channel model), ≥ float32.

    Shape:
        logits: (N, C, H, W) → (N, K, H, W) with K = C, or K = 2 for a one-channel (sigmoid) model.
    """
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.softmax(two_class_logits(x), dim=1)


def logit_threshold(threshold: float) -> float:
    """The logit ``z`` at which ``σ(z) == threshold``; ``threshold`` must lie in (0, 1)."""
    if not 0.0 < threshold < 1.0:
        raise PixelwiseError(
            f"sigmoid threshold must lie strictly between 0 and 1, got {threshold}"
        )
    return math.log(threshold) - math.log1p(-threshold)


def labels(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class indices: argmax over classes; for a one-channel model, 1 where ``σ(z) > threshold``.

    Args:
        logits: model output.
        threshold: foreground probability above which a one-channel model predicts class 1
            (unused for softmax models).

    Returns:
        int64 class indices.

    Shape:
        logits: (N, C, H, W) → (N, H, W).
    """
    if logits.shape[1] == 1:
        return (logits[:, 0] > logit_threshold(threshold)).long()
    # max(dim).indices, not argmax: the same first-maximum index, but PyTorch's CPU argmax over
    # the class dimension of a contiguous N×K×H×W tensor is ~15× slower (50.6 ms against 3.3 ms for
    # 4×11×360×480 on 2 cores; bench/default_model_speed.py).
    return logits.max(dim=1).indices


def labels_from_probabilities(probs: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Class indices from class probabilities that are not a model's own (averaged over video
    frames, :mod:`pixelwise.video.temporal`): argmax over classes; for a sigmoid model (give its
    ``threshold``), 1 where the foreground probability ``probs[:, 1] > threshold``. From a model's
    own probabilities, :func:`labels` of its logits gives the same classes.

    Shape:
        probs: (N, K, H, W) → (N, H, W), int64.
    """
    if threshold is not None:
        if probs.shape[1] != 2:
            raise PixelwiseError(
                f"a sigmoid model's probabilities have 2 classes, got shape {tuple(probs.shape)}"
            )
        return (probs[:, 1] > threshold).long()
    return probs.max(dim=1).indices
