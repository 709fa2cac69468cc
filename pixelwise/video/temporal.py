"""Temporal consistency of a video's labels: stabilisers and the flicker they remove.

A model sees each frame on its own, so a pixel whose class is uncertain flips from frame to frame
(flicker). :class:`TemporalEMA` averages each pixel's class probabilities over time,

    s_0 = p_0,    s_t = α · s_{t-1} + (1 − α) · p_t,    labels_t = argmax_k s_t[k]

(for a sigmoid model ``labels_t = s_t[1] > threshold``), with ``α`` in [0, 1): 0 changes nothing,
larger values smooth more and react later. A frame-level evidence of ``p_t`` counts
``(1 − α) · α^j`` after ``j`` frames: with α = 0.5, half of the label comes from the current frame.

Plain averaging lags behind anything that moves: a pixel that an object's edge just crossed keeps the
old class for a few frames. :class:`TemporalFlow` first aligns the running average to the current
frame with dense optical flow (Farnebäck, OpenCV),

    s_t = α · warp(s_{t-1}, flow_t) + (1 − α) · p_t,    warp(s, f)(x) = s(x + f(x)),

where ``flow_t`` maps each pixel of frame ``t`` to where it was in frame ``t − 1`` (bilinear
sampling, edges replicated; a convex combination, so each pixel's probabilities still sum to 1).

:func:`flicker_rate` measures what both are for: the fraction of pixels whose predicted class
changes between consecutive frames where the ground truth does not.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterable

import numpy as np

from ..errors import PixelwiseError

__all__ = [
    "DEFAULT_ALPHA",
    "TEMPORAL_MODES",
    "TemporalEMA",
    "TemporalFlow",
    "flicker_counts",
    "flicker_rate",
    "temporal_stabilizer",
]

DEFAULT_ALPHA = 0.5

# OpenCV's documented example parameters of calcOpticalFlowFarneback: pyramid scale, levels,
# window, iterations, polynomial neighbourhood and its sigma.
_FARNEBACK = (0.5, 3, 15, 3, 5, 1.2)


class TemporalEMA:
    """Exponential moving average of each pixel's class probabilities over frames (see the module's
    formula). Stateful: one instance follows one video; :meth:`reset` starts another.

    Args:
        alpha: weight of the past, 0 <= alpha < 1 (0: no smoothing).
    """

    name = "ema"

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha < 1:
            raise PixelwiseError(f"temporal alpha must lie in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame starts a new video."""
        self._state: np.ndarray | None = None
        self._frame: np.ndarray | None = None

    def __call__(self, probs: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """The stabilised probabilities of the next frame.

        Args:
            probs: this frame's class probabilities, K×H×W float32.
            frame: the frame itself, H×W×C uint8 (what :class:`TemporalFlow` aligns by).

        Returns:
            K×H×W float32 (a new array; ``probs`` is not changed).
        """
        probs = np.asarray(probs, dtype=np.float32)
        if self._state is None or self._state.shape != probs.shape:
            state = probs.copy()
        else:
            past = self._aligned(self._state, self._frame, frame)
            state = self.alpha * past + (1 - self.alpha) * probs
        self._state, self._frame = state, frame
        return state

    def _aligned(self, state: np.ndarray, previous: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """The running average as it stands for ``frame`` (unmoved here)."""
        return state

    def describe(self) -> str:
        return f"temporal {self.name}, alpha {self.alpha:g}"


class TemporalFlow(TemporalEMA):
    """:class:`TemporalEMA` whose running average is first moved along the optical flow from the
    previous frame to this one (OpenCV's Farnebäck; ``opencv-python-headless``, which
    albumentations installs)."""

    name = "flow"

    def _aligned(self, state: np.ndarray, previous: np.ndarray, frame: np.ndarray) -> np.ndarray:
        return warp_back(state, flow_to_previous(previous, frame))


def flow_to_previous(previous: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Dense optical flow ``f`` (H×W×2, x then y, float32) with ``frame(x) ≈ previous(x + f(x))``:
    where each pixel of ``frame`` was in ``previous`` (Farnebäck on the grey images)."""
    import cv2

    return cv2.calcOpticalFlowFarneback(_grey(frame), _grey(previous), None, *_FARNEBACK, 0)


def warp_back(state: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``state`` (K×H×W) sampled at ``x + flow(x)``: the previous frame's values brought to the
    current frame's pixels (bilinear, edges replicated)."""
    import cv2

    k, h, w = state.shape
    xs, ys = _pixel_grid(h, w)
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    hwk = np.ascontiguousarray(state.transpose(1, 2, 0))
    out = np.empty_like(hwk)
    for c in range(0, k, 4):  # cv2.remap takes at most 4 channels at a time
        out[..., c : c + 4] = cv2.remap(
            hwk[..., c : c + 4], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        ).reshape(h, w, -1)
    return out.transpose(2, 0, 1)


@functools.lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's x and y (H×W float32 each); read only."""
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _grey(frame: np.ndarray) -> np.ndarray:
    f = frame[..., :3].astype(np.float32)
    grey = f[..., 0] if f.shape[-1] == 1 else f @ np.float32([0.299, 0.587, 0.114])
    return grey.clip(0, 255).astype(np.uint8)


TEMPORAL_MODES: dict[str, type[TemporalEMA]] = {"ema": TemporalEMA, "flow": TemporalFlow}


def temporal_stabilizer(mode: str | None, alpha: float | None = None) -> TemporalEMA | None:
    """The stabiliser a mode names (``ema``, ``flow``; ``None`` or ``none``: none), with ``alpha``
    (``None``: :data:`DEFAULT_ALPHA`)."""
    if mode is None or mode == "none":
        if alpha is not None:
            raise PixelwiseError("--temporal-alpha needs --temporal ema or --temporal flow")
        return None
    if mode not in TEMPORAL_MODES:
        raise PixelwiseError(f"temporal mode {mode!r}: expected none, {', '.join(TEMPORAL_MODES)}")
    return TEMPORAL_MODES[mode](DEFAULT_ALPHA if alpha is None else alpha)


# ---- flicker ------------------------------------------------------------------------------------


def flicker_counts(
    previous: np.ndarray,
    current: np.ndarray,
    previous_target: np.ndarray | None = None,
    target: np.ndarray | None = None,
    *,
    ignore_index: int | None = None,
) -> tuple[int, int]:
    """``(changed, stable)`` for one pair of consecutive frames: ``stable`` counts the pixels
    whose ground truth is the same in both frames (and not ``ignore_index`` in either; every pixel
    when no targets are given), ``changed`` those of them whose predicted class differs.

    Shape:
        all four: H×W class indices.
    """
    if previous.shape != current.shape:
        raise PixelwiseError(
            f"consecutive predictions differ in shape: {previous.shape} and {current.shape}"
        )
    if (previous_target is None) != (target is None):
        raise PixelwiseError("flicker needs both frames' targets, or neither")
    stable = np.ones(current.shape, dtype=bool)
    if target is not None:
        if previous_target.shape != current.shape or target.shape != current.shape:  # type: ignore[union-attr]
            raise PixelwiseError("targets and predictions differ in shape")
        stable = previous_target == target
        if ignore_index is not None:
            stable &= target != ignore_index
    changed = stable & (previous != current)
    return int(changed.sum()), int(stable.sum())


def flicker_rate(
    predictions: Iterable[np.ndarray],
    targets: Iterable[np.ndarray] | None = None,
    *,
    ignore_index: int | None = None,
) -> float:
    """Flicker of a video's predicted labels: over every pair of consecutive frames, the pixels
    whose predicted class changes where the ground truth does not, divided by the pixels whose
    ground truth does not change (totals over the video, not a mean of per-pair rates). Without
    ``targets`` every pixel counts as unchanged: the fraction of label changes.

    Args:
        predictions: H×W class indices per frame, in order (any iterable: streamed).
        targets: the frames' ground truth, same shapes, or ``None``.
        ignore_index: a ground-truth value that counts nowhere.

    Returns:
        A fraction in [0, 1]; 0.0 for fewer than two frames.
    """
    changed = stable = 0
    prev = prev_target = None
    pairs = (
        zip(predictions, targets, strict=True)
        if targets is not None
        else ((p, None) for p in predictions)
    )
    for pred, target in pairs:
        if prev is not None:
            c, s = flicker_counts(prev, pred, prev_target, target, ignore_index=ignore_index)
            changed, stable = changed + c, stable + s
        prev, prev_target = pred, target
    return changed / stable if stable else 0.0
