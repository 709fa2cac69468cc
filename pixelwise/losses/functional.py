"""Loss maths as pure functions.

Every loss here follows one contract: pixels whose target equals ``ignore_index`` contribute nothing,
optional per-class ``weight`` scales each pixel by the weight of its true class, and the mean is taken
over non-ignored pixels only (weighted by those weights). When every pixel is ignored the loss is a
finite zero that still has a gradient graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy"]


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy.

    With label smoothing ``eps`` each pixel's loss is ``(1 - eps) * nll + eps * mean_c(-log p_c)``.
    Computed in at least float32 whatever the autocast dtype (float64 stays float64).

    Args:
        logits: raw class scores.
        target: class indices, ``ignore_index`` where unlabelled.
        weight: per-class weights (C,), or ``None`` for uniform.
        ignore_index: target value to skip.
        label_smoothing: ``eps`` in [0, 1).

    Returns:
        Scalar loss: sum of weighted pixel losses / sum of their weights.

    Shape:
        logits: (N, C, H, W); target: (N, H, W).
    """
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
    nll = -logp.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    if label_smoothing > 0:
        nll = (1 - label_smoothing) * nll - label_smoothing * logp.mean(dim=1)
    w = valid.to(nll.dtype)
    if weight is not None:
        w = w * weight.to(device=nll.device, dtype=nll.dtype)[safe_target]
    return (nll * w).sum() / w.sum().clamp_min(torch.finfo(nll.dtype).tiny)
