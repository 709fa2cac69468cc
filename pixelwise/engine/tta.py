"""Test-time augmentation: predict a batch at several scales and mirrored, and average.

For each scale ``s`` the batch is resized bilinearly to ``round(s·H) × round(s·W)``, run through the
model as is and horizontally flipped; each pass's logits are un-flipped, resized back to H×W
bilinearly and turned into probabilities (softmax, or σ for a one-channel sigmoid model). The
probabilities of all passes are averaged, and the average is returned as logits again —
``log(mean p)`` for softmax models (``softmax(log p) = p``), ``logit(mean σ)`` for sigmoid ones — so
the result drops in wherever plain logits go: sliding-window blending
(:mod:`pixelwise.engine.tiling`), argmax or threshold, the dense CRF.

Why probabilities, not logits: the average of the passes' probabilities is the predictive
distribution of the ensemble of augmented views, a mixture in which every view has the same vote and
the result stays a calibrated distribution. Averaging logits would instead take a normalised
geometric mean of probabilities, in which one over-confident view (say, a small scale where an
object is a few pixels wide) can overrule all the others. Averaging softmax scores over scales and
left-right flips is the standard evaluation protocol: DeepLab v3 (Chen et al., arXiv:1706.05587)
evaluates with multi-scale and flipped inputs averaged this way, and mmsegmentation's
``SegTTAModel`` sums softmax (or sigmoid) outputs over its augmentations and divides by their number.

The averages are taken in log space (``logsumexp`` of log-probabilities, minus ``log n``), which is
exactly ``log(mean p)`` but never underflows to ``log 0``; the result is further clamped at the log
of the smallest normal float32 (about -87.3), so it is finite wherever the model's logits are and a
sigmoid result lies within ±87.3.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import PixelwiseError

__all__ = ["TTAConfig", "augmented_logits", "tta_passes"]

# log of the smallest normal float32: the floor of every averaged log-probability.
_LOG_FLOOR = math.log(torch.finfo(torch.float32).tiny)


@dataclass(frozen=True)
class TTAConfig:
    """Which augmentations test-time augmentation averages over.

    Args:
        flip: also predict every scale horizontally mirrored.
        scales: input scale factors, each > 0 (1.0 is the image as is); a list is stored as a tuple.
    """

    flip: bool = True
    scales: tuple[float, ...] = (0.75, 1.0, 1.25)

    def __post_init__(self) -> None:
        if not isinstance(self.flip, bool):
            raise PixelwiseError(f"tta flip must be true or false, got {self.flip!r}")
        if isinstance(self.scales, (str, bytes)) or not hasattr(self.scales, "__iter__"):
            raise PixelwiseError(f"tta scales must be a list of numbers > 0, got {self.scales!r}")
        scales = tuple(self.scales)
        if not scales:
            raise PixelwiseError("tta scales must not be empty (use [1.0] for no rescaling)")
        for s in scales:
            if (
                isinstance(s, bool)
                or not isinstance(s, (int, float))
                or not math.isfinite(s)
                or s <= 0
            ):
                raise PixelwiseError(
                    f"tta scales must be finite numbers > 0, got {s!r} in {scales}"
                )
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))


def tta_passes(config: TTAConfig) -> int:
    """Forward passes per batch: one per scale, twice that with flips."""
    return len(config.scales) * (2 if config.flip else 1)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _check_output(out: torch.Tensor, inp: torch.Tensor, *, sigmoid: bool) -> None:
    """The model's logits for ``inp`` must be N×K×h×w, with K = 1 exactly when ``sigmoid``."""
    n, h, w = inp.shape[0], inp.shape[-2], inp.shape[-1]
    if out.ndim != 4 or out.shape[0] != n or tuple(out.shape[-2:]) != (h, w):
        raise PixelwiseError(
            f"test-time augmentation: the model returned shape {tuple(out.shape)} for input "
            f"{tuple(inp.shape)}; expected (N, K, h, w) = ({n}, K, {h}, {w})"
        )
    if sigmoid and out.shape[1] != 1:
        raise PixelwiseError(
            f"test-time augmentation: sigmoid=True needs one logit channel, got {out.shape[1]}"
        )
    if not sigmoid and out.shape[1] == 1:
        raise PixelwiseError(
            "test-time augmentation: a one-channel model is a sigmoid model; pass sigmoid=True"
        )


def augmented_logits(
    window_logits: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    config: TTAConfig,
    *,
    sigmoid: bool,
) -> torch.Tensor:
    """Logits of ``batch`` averaged over scales and flips in probability space.

    Args:
        window_logits: N×C×h×w normalised images → N×K×h×w float logits, for any h, w.
        batch: the normalised images.
        config: the scales and flip.
        sigmoid: the model is a one-channel sigmoid model (K = 1): σ is averaged and the result is
            ``logit(mean σ)``; otherwise softmax probabilities are averaged and the result is
            ``log(mean p)``.

    Returns:
        float32 logits whose softmax (σ for a sigmoid model) is the mean of the passes'
        probabilities, on the device ``window_logits`` returns.

    Shape:
        batch: (N, C, H, W) → (N, K, H, W).
    """
    if batch.ndim != 4 or batch.shape[-2] < 1 or batch.shape[-1] < 1:
        raise PixelwiseError(
            f"test-time augmentation needs an N×C×H×W batch, got shape {tuple(batch.shape)}"
        )
    height, width = int(batch.shape[-2]), int(batch.shape[-1])
    flips = (False, True) if config.flip else (False,)
    # running logsumexp over the views of log p (and, for a sigmoid model, of log(1 - p))
    log_sum: torch.Tensor | None = None
    log_sum_neg: torch.Tensor | None = None
    for scale in config.scales:
        scaled = _resize(batch, (max(1, round(scale * height)), max(1, round(scale * width))))
        for flip in flips:
            out = window_logits(scaled.flip(-1) if flip else scaled).float()
            _check_output(out, scaled, sigmoid=sigmoid)
            if flip:
                out = out.flip(-1)
            out = _resize(out, (height, width))
            if sigmoid:
                lp, lq = F.logsigmoid(out), F.logsigmoid(-out)
                log_sum_neg = lq if log_sum_neg is None else torch.logaddexp(log_sum_neg, lq)
            else:
                lp = F.log_softmax(out, dim=1)
            log_sum = lp if log_sum is None else torch.logaddexp(log_sum, lp)
    log_n = math.log(tta_passes(config))
    log_mean = (log_sum - log_n).clamp_min(_LOG_FLOOR)
    if not sigmoid:
        return log_mean
    return log_mean - (log_sum_neg - log_n).clamp_min(_LOG_FLOOR)  # log p - log(1 - p)
