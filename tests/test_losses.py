"""Losses: agreement with torch, hand-computed values (2×2 and 3×3 cases written out), invariances,
ignored pixels, absent classes, gradients (gradcheck in float64), autocast, the sigmoid (one-channel)
form, and the name → loss factory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.errors import PixelwiseError
from pixelwise.losses import (
    LOSSES,
    BCELoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    LovaszSoftmaxLoss,
    TverskyLoss,
    binary_cross_entropy,
    build_loss,
    cross_entropy,
    dice_loss,
    focal_loss,
    focal_tversky_loss,
    lovasz_softmax_loss,
    tversky_loss,
)
from pixelwise.metrics import ConfusionMatrix

C = 4


def _batch(seed: int = 0, dtype=torch.float32, ignore_frac: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(2, C, 5, 7, generator=g)).to(dtype)
    target = torch.randint(0, C, (2, 5, 7), generator=g)
    target[torch.rand(target.shape, generator=g) < ignore_frac] = 255
    return logits, target


WEIGHTS = torch.tensor([0.5, 2.0, 1.0, 3.0])


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"ignore_index": 255},
        {"weight": WEIGHTS},
        {"weight": WEIGHTS, "ignore_index": 255},
        {"label_smoothing": 0.1},
        {"label_smoothing": 0.25, "ignore_index": 255},
        {"weight": WEIGHTS, "label_smoothing": 0.1},
        {"weight": WEIGHTS, "label_smoothing": 0.3, "ignore_index": 255},
    ],
    ids=[
        "plain",
        "ignore",
        "weights",
        "weights+ignore",
        "smoothing",
        "smoothing+ignore",
        "weights+smoothing",
        "weights+smoothing+ignore",
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_torch_cross_entropy(kw: dict, seed: int) -> None:
    logits, target = _batch(seed, ignore_frac=0.2 if "ignore_index" in kw else 0.0)
    ours = cross_entropy(logits, target, **{"ignore_index": 255, **kw})
    ref = F.cross_entropy(logits, target, **{"ignore_index": 255, **kw})
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    module = CrossEntropyLoss(**{"ignore_index": 255, **kw})
    torch.testing.assert_close(module(logits, target), ref, rtol=1e-6, atol=1e-6)


def test_hand_computed_2x2() -> None:
    # 2 classes, one 2×2 image. Pixel logits and targets:
    #   (0, 0)      target 0: p0 = 1/2        → -log(1/2) = log 2
    #   (log 3, 0)  target 0: p0 = 3/4        → log(4/3)
    #   (log 3, 0)  target 1: p1 = 1/4        → log 4
    #   (5, -5)     ignored (255)
    l3 = math.log(3.0)
    logits = torch.tensor([[[[0.0, l3], [l3, 5.0]], [[0.0, 0.0], [0.0, -5.0]]]])
    target = torch.tensor([[[0, 0], [1, 255]]])
    expected = (math.log(2) + math.log(4 / 3) + math.log(4)) / 3
    assert cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # the same from a numpy log-softmax
    z = logits[0].numpy().reshape(2, -1).astype(np.float64)
    logp = z - np.log(np.exp(z).sum(axis=0, keepdims=True))
    assert expected == pytest.approx(-(logp[0, 0] + logp[0, 1] + logp[1, 2]) / 3)
    # class weights (1, 3): a weighted mean over the labelled pixels
    weighted = (math.log(2) + math.log(4 / 3) + 3 * math.log(4)) / (1 + 1 + 3)
    got = cross_entropy(logits, target, weight=torch.tensor([1.0, 3.0]))
    assert got.item() == pytest.approx(weighted, rel=1e-6)
    # label smoothing eps: (1 - eps) * nll + eps * mean_c(-log p_c)
    eps = 0.2
    smooth = [
        (1 - eps) * math.log(2) + eps * math.log(2),
        (1 - eps) * math.log(4 / 3) + eps * (math.log(4 / 3) + math.log(4)) / 2,
        (1 - eps) * math.log(4) + eps * (math.log(4 / 3) + math.log(4)) / 2,
    ]
    got = cross_entropy(logits, target, label_smoothing=eps)
    assert got.item() == pytest.approx(sum(smooth) / 3, rel=1e-6)
    # weights (1, 3) and smoothing: the target term carries w(y_i), the uniform term eps/K * w(c) for
    # each class c; divided by the sum of the true classes' weights (PyTorch's definition)
    # (-log p(0), -log p(1)) per pixel: (log 2, log 2), (log 4/3, log 4), (log 4/3, log 4)
    nlls = [
        (math.log(2), math.log(2)),
        (math.log(4 / 3), math.log(4)),
        (math.log(4 / 3), math.log(4)),
    ]
    spread = [eps / 2 * (1 * a + 3 * b) for a, b in nlls]
    hand = [(1 - eps) * nlls[0][0], (1 - eps) * nlls[1][0], (1 - eps) * 3 * nlls[2][1]]
    expected = (sum(hand) + sum(spread)) / (1 + 1 + 3)
    got = cross_entropy(logits, target, weight=torch.tensor([1.0, 3.0]), label_smoothing=eps)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    ref = F.cross_entropy(
        logits, target, weight=torch.tensor([1.0, 3.0]), label_smoothing=eps, ignore_index=255
    )
    assert ref.item() == pytest.approx(expected, rel=1e-6)


def test_uniform_and_scaled_weights_change_nothing() -> None:
    logits, target = _batch()
    base = cross_entropy(logits, target)
    torch.testing.assert_close(cross_entropy(logits, target, weight=torch.ones(C)), base)
    torch.testing.assert_close(cross_entropy(logits, target, weight=torch.full((C,), 0.37)), base)
    weighted = cross_entropy(logits, target, weight=WEIGHTS)
    assert not torch.allclose(weighted, base)
    torch.testing.assert_close(cross_entropy(logits, target, weight=WEIGHTS * 7.5), weighted)


def _loss_and_grad(logits: torch.Tensor, target: torch.Tensor, **kw):
    x = logits.clone().requires_grad_(True)
    loss = cross_entropy(x, target, **kw)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("kw", [{}, {"weight": WEIGHTS}, {"label_smoothing": 0.1}])
def test_ignored_pixels_affect_neither_loss_nor_gradient(kw: dict) -> None:
    logits, target = _batch(ignore_frac=0.4)
    ignored = (target == 255).unsqueeze(1).expand_as(logits)
    assert ignored.any()
    changed = logits.clone()
    changed[ignored] = 100 * torch.randn(int(ignored.sum()))
    loss_a, grad_a = _loss_and_grad(logits, target, **kw)
    loss_b, grad_b = _loss_and_grad(changed, target, **kw)
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(grad_a, grad_b)
    assert (grad_a[ignored] == 0).all()


@pytest.mark.parametrize("kw", [{}, {"weight": WEIGHTS}, {"label_smoothing": 0.1}])
def test_all_pixels_ignored_gives_zero_with_gradient(kw: dict) -> None:
    logits = torch.randn(2, C, 3, 3, requires_grad=True)
    target = torch.full((2, 3, 3), 255)
    loss = cross_entropy(logits, target, **kw)
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert (logits.grad == 0).all()


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_gradient_matches_torch(smoothing: float) -> None:
    logits, target = _batch()
    _, ours = _loss_and_grad(logits, target, weight=WEIGHTS, label_smoothing=smoothing)
    x = logits.clone().requires_grad_(True)
    F.cross_entropy(
        x, target, weight=WEIGHTS, ignore_index=255, label_smoothing=smoothing
    ).backward()
    torch.testing.assert_close(ours, x.grad)


@pytest.mark.parametrize("kw", [{}, {"weight": WEIGHTS.double()}, {"label_smoothing": 0.1}])
def test_gradcheck_float64(kw: dict) -> None:
    logits, target = _batch(dtype=torch.float64)
    x = logits[:1, :, :3, :4].clone().requires_grad_(True)
    assert cross_entropy(x, target[:1, :3, :4], **kw).dtype == torch.float64
    assert torch.autograd.gradcheck(
        lambda z: cross_entropy(z, target[:1, :3, :4], **kw), (x,), eps=1e-6, atol=1e-5
    )


def test_finite_under_bfloat16_autocast() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, C, 3, padding=1)
    x = 10 * torch.randn(2, 3, 8, 8)
    target = torch.randint(0, C, (2, 8, 8))
    target[:, :2] = 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(x)
        assert logits.dtype == torch.bfloat16
        loss = cross_entropy(logits, target, weight=WEIGHTS, label_smoothing=0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
    ref = cross_entropy(logits.detach().float(), target, weight=WEIGHTS, label_smoothing=0.1)
    torch.testing.assert_close(loss.detach(), ref)


def test_build_loss() -> None:
    logits, target = _batch()
    loss = build_loss([("ce", 1.0, {})], class_weights=WEIGHTS.tolist(), ignore_index=255)
    torch.testing.assert_close(loss(logits, target), cross_entropy(logits, target, weight=WEIGHTS))
    doubled = build_loss([("ce", 0.5, {}), ("ce", 1.5, {"label_smoothing": 0.0})])
    torch.testing.assert_close(doubled(logits, target), 2 * cross_entropy(logits, target))


def test_build_loss_unknown_name_or_argument() -> None:
    with pytest.raises(PixelwiseError, match="'dice_typo'") as exc:
        build_loss([("dice_typo", 1.0, {})])
    assert "ce" in str(exc.value)
    with pytest.raises(PixelwiseError, match="gamma"):
        build_loss([("ce", 1.0, {"gamma": 2.0})])


# --- every loss ---------------------------------------------------------------------------------

# Each loss as a function of (logits, target, **shared) with representative non-default settings.
# ``shared`` holds weight and ignore_index, which every loss takes.
LOSS_FNS = {
    "ce": cross_entropy,
    "ce_smooth": lambda x, t, **kw: cross_entropy(x, t, label_smoothing=0.1, **kw),
    "focal": focal_loss,
    "focal_alpha": lambda x, t, **kw: focal_loss(x, t, gamma=1.5, alpha=[0.2, 0.3, 0.1, 0.4], **kw),
    "dice": dice_loss,
    "dice_image_sq": lambda x, t, **kw: dice_loss(x, t, per_image=True, squared=True, **kw),
    "dice_no_bg": lambda x, t, **kw: dice_loss(x, t, include_background=False, smooth=0.0, **kw),
    "tversky": tversky_loss,
    "focal_tversky_image": lambda x, t, **kw: focal_tversky_loss(x, t, per_image=True, **kw),
    "lovasz": lovasz_softmax_loss,
    "lovasz_image_all": lambda x, t, **kw: lovasz_softmax_loss(
        x, t, per_image=True, only_present=False, **kw
    ),
}
OVERLAP = ["dice", "dice_image_sq", "dice_no_bg", "tversky", "focal_tversky_image"]
OVERLAP += ["lovasz", "lovasz_image_all"]


def _grad(fn, logits: torch.Tensor, target: torch.Tensor, **kw):  # noqa: ANN001
    x = logits.clone().requires_grad_(True)
    loss = fn(x, target, **kw)
    loss.backward()
    return loss.detach(), x.grad


# 2 classes, one 2×2 image (the cross-entropy case above). Probabilities per pixel:
#   (0, 0)      target 0: p = (1/2, 1/2)
#   (log 3, 0)  target 0: p = (3/4, 1/4)
#   (log 3, 0)  target 1: p = (3/4, 1/4)
#   (5, -5)     ignored
L3 = math.log(3.0)
LOGITS_2X2 = torch.tensor(
    [[[[0.0, L3], [L3, 5.0]], [[0.0, 0.0], [0.0, -5.0]]]], dtype=torch.float64
)
TARGET_2X2 = torch.tensor([[[0, 0], [1, 255]]])


def test_focal_hand_computed_2x2() -> None:
    # (1 - p_t)^gamma * (-log p_t): p_t = 1/2, 3/4, 1/4
    terms = [(1 / 2, math.log(2)), (1 / 4, math.log(4 / 3)), (3 / 4, math.log(4))]
    g2 = [m**2 * nll for m, nll in terms]
    assert focal_loss(LOGITS_2X2, TARGET_2X2).item() == pytest.approx(sum(g2) / 3, rel=1e-12)
    # binary alpha 0.25: 1 - 0.25 = 0.75 for class 0 (first two pixels), 0.25 for class 1
    got = focal_loss(LOGITS_2X2, TARGET_2X2, alpha=0.25).item()
    assert got == pytest.approx((0.75 * g2[0] + 0.75 * g2[1] + 0.25 * g2[2]) / 3, rel=1e-12)
    # class weights (1, 3) also normalise: divide by 1 + 1 + 3
    got = focal_loss(LOGITS_2X2, TARGET_2X2, weight=[1.0, 3.0]).item()
    assert got == pytest.approx((g2[0] + g2[1] + 3 * g2[2]) / 5, rel=1e-12)


def test_dice_hand_computed_2x2() -> None:
    # class 0: TP = 1/2 + 3/4 = 5/4, Σp = 1/2 + 3/4 + 3/4 = 2, Σg = 2
    # class 1: TP = 1/4,             Σp = 1/2 + 1/4 + 1/4 = 1, Σg = 1
    d0, d1 = (2 * 5 / 4) / (2 + 2), (2 * 1 / 4) / (1 + 1)  # 5/8, 1/4
    x, t = LOGITS_2X2, TARGET_2X2
    assert dice_loss(x, t, smooth=0.0).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-12)
    # smooth 1: (2 TP + 1) / (Σp + Σg + 1)
    s0, s1 = (2 * 5 / 4 + 1) / (4 + 1), (2 * 1 / 4 + 1) / (2 + 1)  # 0.7, 0.5
    assert dice_loss(x, t, smooth=1.0).item() == pytest.approx(1 - (s0 + s1) / 2, rel=1e-12)
    # background (class 0) left out
    got = dice_loss(x, t, smooth=0.0, include_background=False).item()
    assert got == pytest.approx(1 - d1, rel=1e-12)
    # class weights (1, 3): weighted mean over classes
    got = dice_loss(x, t, smooth=0.0, weight=[1.0, 3.0]).item()
    assert got == pytest.approx((1 * (1 - d0) + 3 * (1 - d1)) / 4, rel=1e-12)
    # squared denominator: Σp² = 1/4 + 9/16 + 9/16 = 11/8 (class 0), 1/4 + 1/16 + 1/16 = 3/8 (class 1)
    q0, q1 = (5 / 2) / (11 / 8 + 2), (1 / 2) / (3 / 8 + 1)  # 20/27, 4/11
    got = dice_loss(x, t, smooth=0.0, squared=True).item()
    assert got == pytest.approx(1 - (q0 + q1) / 2, rel=1e-12)


def test_lovasz_hand_computed_2x2() -> None:
    # class 0, errors |g - p0| sorted: 3/4 (g 0), 1/2 (g 1), 1/4 (g 1); |g| = 2
    #   Jaccard of the top k: 1 - (2 - Σg)/(2 + Σ(1-g)) = 1 - 2/3, 1 - 1/3, 1 - 0/3 → Δ = 1/3, 1/3, 1/3
    loss0 = (3 / 4 + 1 / 2 + 1 / 4) / 3
    # class 1, errors |g - p1| sorted: 3/4 (g 1), 1/2 (g 0), 1/4 (g 0); |g| = 1
    #   Jaccard of the top k: 1 - 0/1, 1 - 0/2, 1 - 0/3 → Δ = 1, 0, 0
    loss1 = 3 / 4
    got = lovasz_softmax_loss(LOGITS_2X2, TARGET_2X2).item()
    assert got == pytest.approx((loss0 + loss1) / 2, rel=1e-12)
    got = lovasz_softmax_loss(LOGITS_2X2, TARGET_2X2, include_background=False).item()
    assert got == pytest.approx(loss1, rel=1e-12)


def test_binary_cross_entropy_hand_computed_2x2() -> None:
    # one channel z = logit of class 1; σ(0) = 1/2, σ(log 3) = 3/4:
    #   z = 0      target 1: -log 1/2          = log 2
    #   z = log 3  target 1: -log 3/4          = log 4/3
    #   z = log 3  target 0: -log (1 - 3/4)    = log 4
    #   z = 5      ignored
    z = torch.tensor([[[[0.0, L3], [L3, 5.0]]]], dtype=torch.float64)
    t = torch.tensor([[[1, 1], [0, 255]]])
    expected = (math.log(2) + math.log(4 / 3) + math.log(4)) / 3
    assert binary_cross_entropy(z, t).item() == pytest.approx(expected, rel=1e-12)
    valid = t != 255
    ref = F.binary_cross_entropy_with_logits(z[:, 0][valid], t[valid].double())
    assert binary_cross_entropy(z, t).item() == pytest.approx(ref.item(), rel=1e-12)
    # weights (background 2, foreground 1)
    got = binary_cross_entropy(z, t, weight=[2.0, 1.0]).item()
    assert got == pytest.approx((math.log(2) + math.log(4 / 3) + 2 * math.log(4)) / 4, rel=1e-12)
    # label smoothing eps: targets eps/2 and 1 - eps/2
    eps = 0.2
    y = t[valid].double() * (1 - eps) + eps / 2
    ref = F.binary_cross_entropy_with_logits(z[:, 0][valid], y)
    got = binary_cross_entropy(z, t, label_smoothing=eps).item()
    assert got == pytest.approx(ref.item(), rel=1e-12)
    # weights (background 2, foreground 1) and smoothing: the positive term of the smoothed target
    # carries w_foreground, the negative term w_background (torch's pos_weight = 1/2 with weight 2),
    # divided by the sum of the true classes' weights 1 + 1 + 2
    total = F.binary_cross_entropy_with_logits(
        z[:, 0][valid], y, weight=torch.tensor(2.0), pos_weight=torch.tensor(0.5), reduction="sum"
    )
    got = binary_cross_entropy(z, t, weight=[2.0, 1.0], label_smoothing=eps).item()
    assert got == pytest.approx(total.item() / 4, rel=1e-12)
    # binary Dice of the foreground: TP = 1/2 + 3/4, Σσ = 1/2 + 3/4 + 3/4, Σg = 2
    got = dice_loss(z, t, smooth=0.0, include_background=False).item()
    assert got == pytest.approx(1 - (2 * 5 / 4) / (2 + 2), rel=1e-12)


def test_binary_cross_entropy_needs_one_channel() -> None:
    with pytest.raises(PixelwiseError, match="one-channel"):
        binary_cross_entropy(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


# 3 classes, one 3×3 image. Logits (log 2 at one class, 0 elsewhere) give p = 1/2 there, 1/4
# elsewhere; all-zero logits give 1/3 each. Written pixel by pixel (row-major):
#   A = (1/2, 1/4, 1/4), B = (1/4, 1/2, 1/4), C = (1/4, 1/4, 1/2), U = (1/3, 1/3, 1/3)
#   probabilities  A A B / A C U / C U B
#   targets        0 0 1 / 1 2 ∅ / 2 2 0     (∅ = ignored)
_L2 = math.log(2.0)
_P = {"A": [_L2, 0, 0], "B": [0, _L2, 0], "C": [0, 0, _L2], "U": [0, 0, 0]}
LOGITS_3X3 = torch.tensor([_P[c] for c in "AABACUCUB"], dtype=torch.float64).T.reshape(1, 3, 3, 3)
TARGET_3X3 = torch.tensor([[[0, 0, 1], [1, 2, 255], [2, 2, 0]]])
# Soft counts over the 8 labelled pixels (A A B A C C U B for the p sums):
#   class 0: TP = 1/2 + 1/2 + 1/4 = 5/4; Σp = 3·1/2 + 2·1/4 + 2·1/4 + 1/3 = 17/6; Σg = 3
#   class 1: TP = 1/2 + 1/4       = 3/4; Σp = 3·1/4 + 2·1/2 + 2·1/4 + 1/3 = 31/12; Σg = 2
#   class 2: TP = 1/2 + 1/2 + 1/3 = 4/3; Σp = 3·1/4 + 2·1/4 + 2·1/2 + 1/3 = 31/12; Σg = 3
TP3, SP3, SG3 = [5 / 4, 3 / 4, 4 / 3], [17 / 6, 31 / 12, 31 / 12], [3, 2, 3]


def test_focal_hand_computed_3x3() -> None:
    # p_t per labelled pixel: 1/2 1/2 1/2 / 1/4 1/2 · / 1/2 1/3 1/4
    f = {p: (1 - p) ** 2 * -math.log(p) for p in (1 / 2, 1 / 4, 1 / 3)}
    expected = (5 * f[1 / 2] + 2 * f[1 / 4] + f[1 / 3]) / 8
    assert focal_loss(LOGITS_3X3, TARGET_3X3).item() == pytest.approx(expected, rel=1e-12)
    # per-class alpha (0.2, 0.3, 0.5): class 0 pixels p_t 1/2, 1/2, 1/4; class 1: 1/2, 1/4;
    # class 2: 1/2, 1/2, 1/3
    a = (
        0.2 * (2 * f[1 / 2] + f[1 / 4])
        + 0.3 * (f[1 / 2] + f[1 / 4])
        + 0.5 * (2 * f[1 / 2] + f[1 / 3])
    ) / 8
    got = focal_loss(LOGITS_3X3, TARGET_3X3, alpha=[0.2, 0.3, 0.5]).item()
    assert got == pytest.approx(a, rel=1e-12)
    with pytest.raises(PixelwiseError, match="one alpha per class"):
        focal_loss(LOGITS_3X3, TARGET_3X3, alpha=0.25)


def test_dice_hand_computed_3x3() -> None:
    d = [2 * tp / (sp + sg) for tp, sp, sg in zip(TP3, SP3, SG3, strict=True)]  # 3/7, 18/55, 32/67
    assert d == pytest.approx([3 / 7, 18 / 55, 32 / 67])
    got = dice_loss(LOGITS_3X3, TARGET_3X3, smooth=0.0).item()
    assert got == pytest.approx(1 - sum(d) / 3, rel=1e-12)
    got = dice_loss(LOGITS_3X3, TARGET_3X3, smooth=0.0, include_background=False).item()
    assert got == pytest.approx(1 - (d[1] + d[2]) / 2, rel=1e-12)


def test_tversky_hand_computed_3x3() -> None:
    # FP = Σp - TP, FN = Σg - TP; T = TP / (TP + 0.3 FP + 0.7 FN)
    t = [
        tp / (tp + 0.3 * (sp - tp) + 0.7 * (sg - tp))
        for tp, sp, sg in zip(TP3, SP3, SG3, strict=True)
    ]
    got = tversky_loss(LOGITS_3X3, TARGET_3X3, smooth=0.0).item()
    assert got == pytest.approx(sum(1 - x for x in t) / 3, rel=1e-12)
    got = focal_tversky_loss(LOGITS_3X3, TARGET_3X3, smooth=0.0).item()
    assert got == pytest.approx(sum((1 - x) ** 0.75 for x in t) / 3, rel=1e-12)
    # alpha = beta = 1/2 is the Dice loss: (TP + s/2) / (TP + (FP + FN)/2 + s/2) = Dice with s
    half = tversky_loss(LOGITS_3X3, TARGET_3X3, alpha=0.5, beta=0.5, smooth=0.5)
    torch.testing.assert_close(half, dice_loss(LOGITS_3X3, TARGET_3X3, smooth=1.0))


def test_lovasz_of_hard_predictions_is_one_minus_iou_3x3() -> None:
    # predictions (argmax, U → class 0):  0 0 1 / 0 2 · / 2 0 1
    #   class 0: truth {1, 2, 9}, predicted {1, 2, 4, 8} → IoU 2/5
    #   class 1: truth {3, 4},    predicted {3, 9}       → IoU 1/3
    #   class 2: truth {5, 7, 8}, predicted {5, 7}       → IoU 2/3
    pred = torch.tensor([[[0, 0, 1], [0, 2, 0], [2, 0, 1]]])
    hard = 40.0 * F.one_hot(pred, 3).movedim(-1, 1).double()
    got = lovasz_softmax_loss(hard, TARGET_3X3).item()
    assert got == pytest.approx(1 - (2 / 5 + 1 / 3 + 2 / 3) / 3, abs=1e-12)
    cm = ConfusionMatrix(3)
    cm.update(pred, TARGET_3X3)
    assert got == pytest.approx(1 - cm.scores().miou, abs=1e-12)


def test_focal_gamma_zero_is_cross_entropy_exactly() -> None:
    logits, target = _batch()
    for kw in ({}, {"weight": WEIGHTS}):
        assert torch.equal(
            focal_loss(logits, target, gamma=0.0, **kw), cross_entropy(logits, target, **kw)
        )
        _, g_focal = _grad(focal_loss, logits, target, gamma=0.0, **kw)
        _, g_ce = _grad(cross_entropy, logits, target, **kw)
        assert torch.equal(g_focal, g_ce)
    assert focal_loss(logits, target, gamma=2.0) < cross_entropy(logits, target)


@pytest.mark.parametrize("name", list(LOSS_FNS))
def test_uniform_and_scaled_weights_change_nothing_for_every_loss(name: str) -> None:
    fn = LOSS_FNS[name]
    logits, target = _batch(seed=1)
    base = fn(logits, target)
    torch.testing.assert_close(fn(logits, target, weight=torch.full((C,), 0.37)), base)
    weighted = fn(logits, target, weight=WEIGHTS)
    torch.testing.assert_close(fn(logits, target, weight=WEIGHTS * 7.5), weighted)


@pytest.mark.parametrize("name", list(LOSS_FNS))
def test_perfect_prediction_gives_zero(name: str) -> None:
    target = torch.tensor([[[0, 1, 2], [3, 255, 0]], [[1, 1, 2], [3, 3, 255]]])
    logits = 60.0 * F.one_hot(torch.where(target == 255, 0, target), C).movedim(-1, 1).double()
    loss = LOSS_FNS[name](logits, target)
    # label smoothing keeps a floor: eps * mean_c(-log p_c) is not zero for a one-hot prediction
    if name == "ce_smooth":
        assert loss.item() > 0
    else:
        assert loss.item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", list(LOSS_FNS))
@pytest.mark.parametrize("ignore_index", [255, -1])
def test_ignored_pixels_change_neither_loss_nor_gradient_for_every_loss(
    name: str, ignore_index: int
) -> None:
    fn = LOSS_FNS[name]
    logits, target = _batch(seed=2, ignore_frac=0.4)
    target[target == 255] = ignore_index
    ignored = (target == ignore_index).unsqueeze(1).expand_as(logits)
    changed = logits.clone()
    changed[ignored] = 100 * torch.randn(int(ignored.sum()))
    loss_a, grad_a = _grad(fn, logits, target, weight=WEIGHTS, ignore_index=ignore_index)
    loss_b, grad_b = _grad(fn, changed, target, weight=WEIGHTS, ignore_index=ignore_index)
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(grad_a, grad_b)
    assert (grad_a[ignored] == 0).all()


@pytest.mark.parametrize("name", list(LOSS_FNS))
def test_absent_class_and_fully_ignored_image_are_finite(name: str) -> None:
    fn = LOSS_FNS[name]
    logits, target = _batch(seed=3, ignore_frac=0.0)
    target[target == 2] = 1  # class 2 absent from the batch
    target[0] = 255  # every pixel of image 0 ignored
    loss, grad = _grad(fn, logits, target, weight=WEIGHTS)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad[0] == 0).all() and grad[1].abs().sum() > 0
    # all pixels ignored: zero, still differentiable
    loss, grad = _grad(fn, logits, torch.full_like(target, 255), weight=WEIGHTS)
    assert loss.item() == 0.0 and torch.isfinite(grad).all() and (grad == 0).all()


@pytest.mark.parametrize("name", list(LOSS_FNS))
def test_gradcheck_float64_every_loss(name: str) -> None:
    fn = LOSS_FNS[name]
    logits, target = _batch(seed=4, dtype=torch.float64, ignore_frac=0.2)
    x = logits[:, :, :3, :3].clone().requires_grad_(True)
    t = target[:, :3, :3]
    assert fn(x, t).dtype == torch.float64
    assert torch.autograd.gradcheck(
        lambda z: fn(z, t, weight=WEIGHTS.double()), (x,), eps=1e-6, atol=1e-5
    )


def test_per_image_averages_images_with_labelled_pixels() -> None:
    logits, target = _batch(seed=5, ignore_frac=0.1)
    for fn in (dice_loss, tversky_loss, lovasz_softmax_loss):
        one = [fn(logits[i : i + 1], target[i : i + 1]) for i in range(2)]
        torch.testing.assert_close(fn(logits, target, per_image=True), (one[0] + one[1]) / 2)
        ignored = target.clone()
        ignored[1] = 255  # image 1 has no labelled pixel: left out of the mean
        torch.testing.assert_close(fn(logits, ignored, per_image=True), one[0])


@pytest.mark.parametrize("name", list(LOSS_FNS))
def test_one_channel_model_is_the_pair_zero_z(name: str) -> None:
    g = torch.Generator().manual_seed(6)
    z = 3 * torch.randn(2, 1, 4, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 4, 5), generator=g)
    target[0, 0] = 255
    fn = LOSS_FNS[name]
    w = torch.tensor([0.5, 2.0], dtype=torch.float64)
    kw = {"alpha": [0.2, 0.3]} if name == "focal_alpha" else {}
    base = {"focal_alpha": focal_loss}.get(name, fn)
    one = base(z, target, weight=w, **kw)
    two = base(torch.cat([torch.zeros_like(z), z], dim=1), target, weight=w, **kw)
    torch.testing.assert_close(one, two, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(LOSS_FNS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stable_under_reduced_precision(name: str, dtype: torch.dtype) -> None:
    fn = LOSS_FNS[name]
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, C, 3, padding=1)
    x = 10 * torch.randn(2, 3, 8, 8)
    target = torch.randint(0, C, (2, 8, 8))
    target[:, :2] = 255
    target[target == 3] = 0  # an absent class
    with torch.autocast("cpu", dtype=dtype):
        logits = conv(x)
        assert logits.dtype == dtype
        loss = fn(logits, target, weight=WEIGHTS)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
    torch.testing.assert_close(loss.detach(), fn(logits.detach().float(), target, weight=WEIGHTS))


def test_mismatched_shapes_and_weights_are_clear_errors() -> None:
    logits, target = _batch()
    with pytest.raises(PixelwiseError, match="do not match"):
        dice_loss(logits, target[:, :3])
    with pytest.raises(PixelwiseError, match="3 class weights for 4 classes"):
        lovasz_softmax_loss(logits, target, weight=[1.0, 2.0, 3.0])


def test_every_registered_loss_builds_and_combines() -> None:
    logits, target = _batch()
    names = sorted(set(LOSSES) - {"bce"})
    for name in names:
        loss = build_loss([(name, 1.0, {})], class_weights=WEIGHTS.tolist())
        assert torch.isfinite(loss(logits, target))
    combo = build_loss([("ce", 1.0, {}), ("dice", 0.5, {"smooth": 0.0})], ignore_index=255)
    expected = cross_entropy(logits, target) + 0.5 * dice_loss(logits, target, smooth=0.0)
    torch.testing.assert_close(combo(logits, target), expected)
    z = logits[:, :1]
    binary = build_loss([("bce", 1.0, {}), ("dice", 1.0, {"include_background": False})])
    t = target.clamp(max=1)
    torch.testing.assert_close(
        binary(z, t), binary_cross_entropy(z, t) + dice_loss(z, t, include_background=False)
    )
    with pytest.raises(PixelwiseError, match="empty"):
        build_loss([])


# Every module with every non-default option: the module passes each argument on to its function.
MODULE_CASES = [
    (CrossEntropyLoss, cross_entropy, {"label_smoothing": 0.2}),
    (FocalLoss, focal_loss, {"gamma": 1.5, "alpha": [0.2, 0.3, 0.1, 0.4]}),
    (DiceLoss, dice_loss, {"smooth": 0.5, "include_background": False, "per_image": True}),
    (DiceLoss, dice_loss, {"squared": True}),
    (
        TverskyLoss,
        tversky_loss,
        {"alpha": 0.6, "beta": 0.4, "gamma": 2.0, "smooth": 0.0, "per_image": True},
    ),
    (TverskyLoss, tversky_loss, {"include_background": False}),
    (FocalTverskyLoss, focal_tversky_loss, {"beta": 0.9, "per_image": True}),
    (
        LovaszSoftmaxLoss,
        lovasz_softmax_loss,
        {"per_image": True, "include_background": False, "only_present": False},
    ),
]


@pytest.mark.parametrize(("module", "fn", "kw"), MODULE_CASES)
def test_modules_pass_every_argument_to_their_function(module, fn, kw: dict) -> None:  # noqa: ANN001
    logits, target = _batch(3)
    target[target == 3] = 0  # an absent class, so that only_present counts
    shared = {"weight": WEIGHTS, "ignore_index": 255}
    loss = module(**shared, **kw)
    assert loss.weight is not None and loss.ignore_index == 255
    torch.testing.assert_close(loss(logits, target), fn(logits, target, **shared, **kw))
    # the default module equals the default function (FocalTversky: gamma 0.75)
    torch.testing.assert_close(module()(logits, target), fn(logits, target))


def test_bce_module_passes_its_arguments() -> None:
    logits, target = _batch(4)
    z, t = logits[:, :1], target.clamp(max=1)
    kw = {"weight": [1.0, 3.0], "label_smoothing": 0.1}
    torch.testing.assert_close(BCELoss(**kw)(z, t), binary_cross_entropy(z, t, **kw))
