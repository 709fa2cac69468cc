"""Loss maths as pure functions.

Every loss here follows one contract:

* ``logits`` are N×C×H×W raw scores and ``target`` N×H×W class indices. A one-channel ``logits`` is a
  binary sigmoid model: its channel ``z`` is read as the two-class pair ``(0, z)`` (see
  :mod:`pixelwise.outputs`), so every loss also has its sigmoid form, and ``target`` holds 0 / 1.
* Pixels whose target equals ``ignore_index`` contribute nothing, neither to the value nor to the
  gradient.
* Optional per-class ``weight`` (one value per class; two for a sigmoid model): pixel losses (cross-
  entropy, focal) are weighted by their true class and divided by the sum of those weights (the
  smoothing term of label-smoothed cross-entropy weights each class it spreads to, as PyTorch does);
  per-class losses (Dice, Tversky, Lovász) are averaged over classes with these weights. Either way,
  scaling all weights changes nothing and uniform weights equal no weights.
* Maths runs in at least float32 whatever the autocast dtype (float64 stays float64).
* When a class is absent from the batch, or every pixel is ignored, the loss is finite and has a
  gradient graph (an all-ignored batch gives zero).

References: focal loss, Lin et al., ICCV 2017 (arXiv:1708.02002); soft Dice, Milletari et al., 3DV 2016
(arXiv:1606.04797, the squared denominator) and Sudre et al., DLMIA 2017; Tversky loss, Salehi et al.,
MLMI 2017 (arXiv:1706.05721); focal Tversky, Abraham and Khan, ISBI 2019 (arXiv:1810.07842);
Lovász-softmax, Berman et al., CVPR 2018 (arXiv:1705.08790).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..errors import PixelwiseError
from ..outputs import log_probabilities

__all__ = [
    "cross_entropy",
    "binary_cross_entropy",
    "focal_loss",
    "dice_loss",
    "tversky_loss",
    "focal_tversky_loss",
    "lovasz_softmax_loss",
]

Weight = torch.Tensor | Sequence[float] | None


# --- shared plumbing ------------------------------------------------------------------------------


def _prepare(
    name: str, logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities (N×K×H×W, ≥ float32), the valid-pixel mask and ignore-free targets."""
    if logits.ndim < 3 or tuple(target.shape) != (logits.shape[0], *logits.shape[2:]):
        raise PixelwiseError(
            f"{name}: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match; "
            "expected logits (N, C, H, W) and target (N, H, W)"
        )
    logp = log_probabilities(logits)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    return logp, valid, safe


def _class_weight(name: str, weight: Weight, like: torch.Tensor) -> torch.Tensor | None:
    """``weight`` as a (K,) tensor on ``like``'s device and dtype, K = ``like.shape[1]``."""
    if weight is None:
        return None
    w = torch.as_tensor(weight, dtype=like.dtype, device=like.device).reshape(-1)
    if w.numel() != like.shape[1]:
        raise PixelwiseError(
            f"{name}: {w.numel()} class weights for {like.shape[1]} classes "
            "(a one-channel sigmoid model has 2 classes: background, foreground)"
        )
    return w


def _tiny(t: torch.Tensor) -> float:
    return torch.finfo(t.dtype).tiny


def _pixel_mean(
    values: torch.Tensor,
    valid: torch.Tensor,
    safe: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    unweighted: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum(w_i * values_i + unweighted_i) / sum(w_i)`` over valid pixels, ``w_i`` the weight of
    pixel i's class; ``unweighted`` holds per-pixel terms that carry their own weights."""
    w = valid.to(values.dtype)
    if weight is not None:
        w = w * weight[safe]
    total = values * w
    if unweighted is not None:
        total = total + unweighted
    total = torch.where(valid, total, torch.zeros_like(total))
    return total.sum() / w.sum().clamp_min(_tiny(values))


def _class_mean(
    per_class: torch.Tensor,
    counted: torch.Tensor,
    weight: torch.Tensor | None,
    include_background: bool,
) -> torch.Tensor:
    """Weighted mean over the counted classes of each group, then mean over groups that count any.

    Args:
        per_class: loss per group (image, or the whole batch) and class, (G, K).
        counted: which (group, class) entries count, (G, K) bool.
        weight: class weights (K,) or ``None``.
        include_background: keep class 0.
    """
    first = 0 if include_background else 1
    per_class, counted = per_class[:, first:], counted[:, first:]
    w = counted.to(per_class.dtype)
    if weight is not None:
        w = w * weight[first:]
    per_class = torch.where(counted, per_class, torch.zeros_like(per_class))
    per_group = (per_class * w).sum(1) / w.sum(1).clamp_min(_tiny(per_class))
    groups = counted.any(1).to(per_class.dtype)
    return (per_group * groups).sum() / groups.sum().clamp_min(1.0)


def _one_hot(safe: torch.Tensor, valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One-hot targets (N×K×H×W, ``like``'s dtype), zero at ignored pixels."""
    g = F.one_hot(safe, like.shape[1]).movedim(-1, 1).to(like.dtype)
    return g * valid.unsqueeze(1).to(like.dtype)


class _Overlap(NamedTuple):
    """Soft counts per group and class over valid pixels, each (G, K) with G = N per image or 1 per
    batch: ``TP = Σ p g``, ``FP = Σ p (1 - g)``, ``FN = Σ (1 - p) g``, ``Σ p`` (``Σ p²`` when
    squared) and ``Σ g``; which groups hold a valid pixel, (G, 1) bool; the log-probabilities."""

    name: str
    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor
    sum_p: torch.Tensor
    sum_g: torch.Tensor
    has_pixels: torch.Tensor
    logp: torch.Tensor

    def class_mean(
        self, per_class: torch.Tensor, weight: Weight, include_background: bool
    ) -> torch.Tensor:
        """:func:`_class_mean` of ``per_class`` (G, K) over the groups that hold a valid pixel."""
        w = _class_weight(self.name, weight, self.logp)
        return _class_mean(per_class, self.has_pixels.expand_as(per_class), w, include_background)


def _overlap(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    name: str,
    ignore_index: int,
    per_image: bool,
    squared: bool = False,
) -> _Overlap:
    """The soft overlap counts of ``logits`` and ``target`` (see :class:`_Overlap`)."""
    logp, valid, safe = _prepare(name, logits, target, ignore_index)
    p = logp.exp() * valid.unsqueeze(1).to(logp.dtype)
    g = _one_hot(safe, valid, logp)
    dims = tuple(range(2, p.ndim)) if per_image else (0, *range(2, p.ndim))

    def total(x: torch.Tensor) -> torch.Tensor:
        s = x.sum(dims)
        return s if per_image else s.unsqueeze(0)

    tp = total(p * g)
    fp = total(p * (1 - g))
    fn = total((1 - p) * g)
    sum_p = total(p * p if squared else p)
    sum_g = total(g)
    has_pixels = valid.flatten(1).any(1, keepdim=True) if per_image else valid.any().reshape(1, 1)
    return _Overlap(name, tp, fp, fn, sum_p, sum_g, has_pixels, logp)


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, and 1 where ``den == 0`` (two empty sets agree perfectly)."""
    return torch.where(den > 0, num / den.clamp_min(_tiny(den)), torch.ones_like(num))


def _focal_power(base: torch.Tensor, gamma: float) -> torch.Tensor:
    """``base ** gamma`` for ``base >= 0`` with a finite gradient at ``base == 0`` for any gamma."""
    if gamma == 1:
        return base
    powered = base.clamp_min(_tiny(base)).pow(gamma)
    return torch.where(base > 0, powered, torch.zeros_like(base))


# --- pixel losses ---------------------------------------------------------------------------------


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: Weight = None,
    ignore_index: int = 255,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy (binary cross-entropy for one-channel logits).

    ``loss = sum_i w(y_i) * (-log p_i(y_i)) / sum_i w(y_i)`` over non-ignored pixels. Label
    smoothing ``eps`` mixes the target with the uniform distribution over the K classes, and each
    class of the mixture carries its own weight, as in :func:`torch.nn.functional.cross_entropy`:
    ``sum_i [(1 - eps) w(y_i) (-log p_i(y_i)) + eps/K sum_c w(c) (-log p_i(c))] / sum_i w(y_i)``.
    Without weights that is ``(1 - eps) * (-log p_i(y_i)) + eps * mean_c(-log p_i(c))`` per pixel.

    Args:
        logits: raw class scores.
        target: class indices, ``ignore_index`` where unlabelled.
        weight: per-class weights (K,), or ``None`` for uniform.
        ignore_index: target value to skip.
        label_smoothing: ``eps`` in [0, 1).

    Returns:
        Scalar loss: sum of weighted pixel losses / sum of their weights.

    Shape:
        logits: (N, C, H, W); target: (N, H, W).
    """
    logp, valid, safe = _prepare("cross_entropy", logits, target, ignore_index)
    if not 0.0 <= label_smoothing < 1.0:
        raise PixelwiseError(
            f"cross_entropy: label_smoothing must lie in [0, 1), got {label_smoothing}"
        )
    w = _class_weight("cross_entropy", weight, logp)
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    if label_smoothing == 0:
        return _pixel_mean(nll, valid, safe, w)
    spread = logp if w is None else logp * w.reshape(1, -1, *([1] * (logp.ndim - 2)))
    smooth = -label_smoothing * spread.mean(dim=1)  # eps/K sum_c w(c) (-log p(c))
    return _pixel_mean((1 - label_smoothing) * nll, valid, safe, w, unweighted=smooth)


def binary_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: Weight = None,
    ignore_index: int = 255,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Binary cross-entropy with logits for a one-channel (sigmoid) model.

    ``loss_i = -[y_i log σ(z_i) + (1 - y_i) log(1 - σ(z_i))]``, computed as :func:`cross_entropy` of
    the pair ``(0, z)``. ``weight = (w_background, w_foreground)``; label smoothing ``eps`` moves the
    targets to ``eps / 2`` and ``1 - eps / 2``; with weights, each part of a smoothed target carries
    its own class's weight (torch's ``pos_weight`` form), and the sum is divided by the sum of the
    true classes' weights.

    Shape:
        logits: (N, 1, H, W); target: (N, H, W) holding 0, 1 or ``ignore_index``.
    """
    if logits.ndim < 3 or logits.shape[1] != 1:
        raise PixelwiseError(
            f"binary_cross_entropy: expected one-channel logits (N, 1, H, W) from a sigmoid model "
            f"(model.output: sigmoid), got {tuple(logits.shape)}; use 'ce' for softmax models"
        )
    return cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )


def _alpha(alpha: float | Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    k = like.shape[1]
    if isinstance(alpha, (int, float)):
        if k != 2:
            raise PixelwiseError(
                f"focal_loss: a single alpha ({alpha}) is the binary form (alpha for class 1, "
                f"1 - alpha for class 0); give one alpha per class for {k} classes"
            )
        return torch.tensor([1 - alpha, alpha], device=like.device, dtype=like.dtype)
    a = torch.as_tensor(alpha, dtype=like.dtype, device=like.device).reshape(-1)
    if a.numel() != k:
        raise PixelwiseError(f"focal_loss: {a.numel()} alpha values for {k} classes")
    return a


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | torch.Tensor | None = None,
    weight: Weight = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy scaled down on well-classified pixels.

    ``loss_i = -alpha(y_i) * (1 - p_i(y_i)) ** gamma * log p_i(y_i)``. ``gamma = 0`` with no ``alpha``
    is exactly :func:`cross_entropy`. For a one-channel model this is the paper's sigmoid form.

    Args:
        logits: raw class scores.
        target: class indices, ``ignore_index`` where unlabelled.
        gamma: focusing parameter, >= 0 (the paper uses 2).
        alpha: a float for two classes (``alpha`` for class 1, ``1 - alpha`` for class 0, the paper's
            0.25), or one factor per class; it multiplies the pixel losses but, unlike ``weight``, is
            not part of the normaliser.
        weight: per-class weights (K,): the result is divided by the sum of the pixels' weights.
        ignore_index: target value to skip.

    Returns:
        Scalar loss: ``sum_i w(y_i) * loss_i / sum_i w(y_i)`` over non-ignored pixels.

    Shape:
        logits: (N, C, H, W); target: (N, H, W).
    """
    if gamma < 0:
        raise PixelwiseError(f"focal_loss: gamma must be >= 0, got {gamma}")
    logp, valid, safe = _prepare("focal_loss", logits, target, ignore_index)
    logpt = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -logpt
    if gamma != 0:
        loss = _focal_power(-torch.expm1(logpt), gamma) * loss  # 1 - p_t, accurate near p_t = 1
    if alpha is not None:
        loss = _alpha(alpha, logp)[safe] * loss
    return _pixel_mean(loss, valid, safe, _class_weight("focal_loss", weight, logp))


# --- overlap losses -------------------------------------------------------------------------------


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: Weight = None,
    ignore_index: int = 255,
    smooth: float = 1.0,
    include_background: bool = True,
    per_image: bool = False,
    squared: bool = False,
) -> torch.Tensor:
    """Soft Dice loss: one minus the (class-weighted) mean soft Dice coefficient.

    Per class c, over the valid pixels of the batch (or of each image):
    ``D_c = (2 Σ p_c g_c + s) / (Σ p_c + Σ g_c + s)``, with ``Σ p_c² + Σ g_c²`` in the denominator
    when ``squared`` (Milletari et al.). A class absent from both target and prediction has
    ``D_c = 1``. For a one-channel model the classes are background ``1 - σ(z)`` and foreground
    ``σ(z)``; ``include_background=False`` gives the classic binary Dice of the foreground.

    Args:
        logits: raw class scores.
        target: class indices, ``ignore_index`` where unlabelled.
        weight: per-class weights (K,) for the mean over classes.
        ignore_index: target value to skip.
        smooth: ``s`` >= 0, added to numerator and denominator.
        include_background: keep class 0 in the mean.
        per_image: Dice per image, then the mean over images that hold a valid pixel; otherwise one
            Dice per class over the whole batch.
        squared: squared terms in the denominator.

    Returns:
        Scalar loss in [0, 1].

    Shape:
        logits: (N, C, H, W); target: (N, H, W).
    """
    if smooth < 0:
        raise PixelwiseError(f"dice_loss: smooth must be >= 0, got {smooth}")
    o = _overlap(
        logits,
        target,
        name="dice_loss",
        ignore_index=ignore_index,
        per_image=per_image,
        squared=squared,
    )
    dice = _safe_ratio(2 * o.tp + smooth, o.sum_p + o.sum_g + smooth)
    return o.class_mean(1 - dice, weight, include_background)


def tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: Weight = None,
    ignore_index: int = 255,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 1.0,
    smooth: float = 1.0,
    include_background: bool = True,
    per_image: bool = False,
) -> torch.Tensor:
    """Tversky loss (Salehi et al. 2017), and focal Tversky (Abraham and Khan 2019) when ``gamma != 1``.

    Per class c: ``T_c = (TP + s) / (TP + alpha FP + beta FN + s)`` with soft ``TP = Σ p g``,
    ``FP = Σ p (1 - g)``, ``FN = Σ (1 - p) g``; loss ``(1 - T_c) ** gamma`` averaged over classes as in
    :func:`dice_loss`. ``alpha = beta = 0.5`` is the Dice loss; ``beta > alpha`` penalises missed
    pixels more, favouring recall on small structures.

    Args:
        alpha: weight of false positives.
        beta: weight of false negatives.
        gamma: focal exponent (the focal-Tversky paper's ``1/γ``; it recommends 0.75).
        Other arguments as for :func:`dice_loss`.

    Shape:
        logits: (N, C, H, W); target: (N, H, W).
    """
    if alpha < 0 or beta < 0 or gamma <= 0 or smooth < 0:
        raise PixelwiseError(
            f"tversky_loss: need alpha, beta, smooth >= 0 and gamma > 0; got alpha={alpha}, "
            f"beta={beta}, gamma={gamma}, smooth={smooth}"
        )
    o = _overlap(
        logits, target, name="tversky_loss", ignore_index=ignore_index, per_image=per_image
    )
    t = _safe_ratio(o.tp + smooth, o.tp + alpha * o.fp + beta * o.fn + smooth)
    return o.class_mean(_focal_power((1 - t).clamp_min(0), gamma), weight, include_background)


def focal_tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: Weight = None,
    ignore_index: int = 255,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 0.75,
    smooth: float = 1.0,
    include_background: bool = True,
    per_image: bool = False,
) -> torch.Tensor:
    """Focal Tversky loss: :func:`tversky_loss` with the paper's ``gamma = 0.75`` by default.

    Shape:
        logits: (N, C, H, W); target: (N, H, W).
    """
    return tversky_loss(**locals())  # the same arguments, by name


def lovasz_softmax_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: Weight = None,
    ignore_index: int = 255,
    per_image: bool = False,
    include_background: bool = True,
    only_present: bool = True,
) -> torch.Tensor:
    """Lovász-softmax loss (Berman et al. 2018): a convex surrogate of ``1 - IoU`` per class.

    Per class c, the pixel errors ``e_i = |g_i - p_i(c)|`` are sorted in decreasing order and dotted
    with the gradient of the Lovász extension of the Jaccard loss,
    ``Δ_k = J(g_{1..k}) - J(g_{1..k-1})`` with ``J = 1 - |g ∩ pred| / |g ∪ pred|`` for the top-k
    pixels predicted. For hard (one-hot) predictions it equals ``1 - IoU_c`` exactly. For a
    one-channel model it is applied to ``(1 - σ(z), σ(z))``.

    Args:
        logits: raw class scores.
        target: class indices, ``ignore_index`` where unlabelled.
        weight: per-class weights (K,) for the mean over classes.
        ignore_index: target value to skip.
        per_image: the loss per image, then the mean over images; otherwise over the whole batch.
        include_background: keep class 0 in the mean.
        only_present: average over classes present in the target only (the paper's default);
            otherwise over every class, absent ones penalising their false positives.

    Returns:
        Scalar loss in [0, 1].

    Shape:
        logits: (N, C, H, W); target: (N, H, W).
    """
    logp, valid, safe = _prepare("lovasz_softmax_loss", logits, target, ignore_index)
    k = logp.shape[1]
    p = logp.exp()
    g = _one_hot(safe, valid, logp)
    if per_image:  # groups × classes × pixels
        p, g, v = p.flatten(2), g.flatten(2), valid.flatten(1).unsqueeze(1)
    else:
        p = p.movedim(1, 0).reshape(1, k, -1)
        g = g.movedim(1, 0).reshape(1, k, -1)
        v = valid.reshape(1, 1, -1)
    v = v.expand_as(p)
    # ignored pixels get error -1: sorted after every real pixel (errors >= 0), they cannot change the
    # Lovász gradient of any real pixel, and they are multiplied out below
    errors = torch.where(v, (g - p).abs(), torch.full_like(p, -1.0))
    errors_sorted, perm = errors.sort(dim=-1, descending=True)
    g_sorted = g.gather(-1, perm)
    v_sorted = v.gather(-1, perm).to(p.dtype)
    gts = g_sorted.sum(-1, keepdim=True)
    intersection = gts - g_sorted.cumsum(-1)
    union = gts + (v_sorted - g_sorted).cumsum(-1)  # >= 1 from the first real pixel on
    jaccard = 1 - intersection / union.clamp_min(1.0)
    grad = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)
    per_class = (errors_sorted * v_sorted * grad).sum(-1)  # (G, K)
    has_pixels = v[:, :1, :].any(-1)  # (G, 1)
    counted = gts.squeeze(-1) > 0 if only_present else has_pixels.expand_as(per_class)
    return _class_mean(
        per_class, counted, _class_weight("lovasz_softmax_loss", weight, logp), include_background
    )
