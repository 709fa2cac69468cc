"""Cross-entropy: agreement with torch, hand-computed values, invariances, ignored pixels and
gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.errors import PixelwiseError
from pixelwise.losses import CrossEntropyLoss, build_loss, cross_entropy

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
    ],
    ids=["plain", "ignore", "weights", "weights+ignore", "smoothing", "smoothing+ignore"],
)
def test_matches_torch_cross_entropy(kw: dict) -> None:
    logits, target = _batch(ignore_frac=0.2 if "ignore_index" in kw else 0.0)
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


def test_gradient_matches_torch() -> None:
    logits, target = _batch()
    _, ours = _loss_and_grad(logits, target, weight=WEIGHTS)
    x = logits.clone().requires_grad_(True)
    F.cross_entropy(x, target, weight=WEIGHTS, ignore_index=255).backward()
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
