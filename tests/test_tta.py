"""Test-time augmentation (:mod:`pixelwise.engine.tta`): identity without augmentations, flip and
multi-scale averages checked against hand-built ones, the sigmoid path, finite output, pass counts,
use inside sliding windows, and bad configurations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.engine.tiling import TileConfig, slide_logits
from pixelwise.engine.tta import TTAConfig, augmented_logits, tta_passes
from pixelwise.errors import PixelwiseError

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(out_channels: int, seed: int = 0) -> nn.Module:
    """A 3×3 conv: its output depends on neighbours, so it is not flip-equivariant."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, out_channels, 3, padding=1).eval()


def _batch(h: int, w: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(1))


def _back(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def test_no_augmentation_keeps_the_probabilities() -> None:
    model, x = _model(4), _batch(9, 13)
    none = TTAConfig(flip=False, scales=(1.0,))
    with torch.no_grad():
        out = augmented_logits(model, x, none, sigmoid=False)
        torch.testing.assert_close(out.softmax(1), model(x).softmax(1), rtol=0, atol=1e-5)
        assert out.dtype == torch.float32 and out.shape == (2, 4, 9, 13)
        sig = _model(1)
        out = augmented_logits(sig, x, none, sigmoid=True)
        torch.testing.assert_close(out.sigmoid(), sig(x).sigmoid(), rtol=0, atol=1e-5)


def test_flip_averages_the_probabilities_of_the_image_and_its_mirror() -> None:
    model, x = _model(4), _batch(8, 11)
    with torch.no_grad():
        out = augmented_logits(model, x, TTAConfig(flip=True, scales=(1.0,)), sigmoid=False)
        expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1).flip(-1)) / 2
        assert not torch.allclose(expected, model(x).softmax(1), atol=1e-3)  # the flip matters
    torch.testing.assert_close(out.softmax(1), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2, 8, 11))  # log of a distribution


def test_scales_and_flips_average_resized_probabilities() -> None:
    model, x = _model(3), _batch(17, 23)
    cfg = TTAConfig(flip=True, scales=(0.5, 1.0))
    with torch.no_grad():
        out = augmented_logits(model, x, cfg, sigmoid=False)
        small = _back(x, (8, 12))  # round(8.5) = 8, round(11.5) = 12 (half to even)
        passes = [
            model(x),
            model(x.flip(-1)).flip(-1),
            _back(model(small), (17, 23)),
            _back(model(small.flip(-1)).flip(-1), (17, 23)),
        ]
        expected = torch.stack([p.softmax(1) for p in passes]).mean(0)
    torch.testing.assert_close(out.softmax(1), expected, rtol=0, atol=1e-5)


def test_sigmoid_models_average_sigma() -> None:
    model, x = _model(1), _batch(15, 10)
    cfg = TTAConfig(flip=True, scales=(0.6, 1.0))
    with torch.no_grad():
        out = augmented_logits(model, x, cfg, sigmoid=True)
        small = _back(x, (9, 6))
        passes = [
            model(x),
            model(x.flip(-1)).flip(-1),
            _back(model(small), (15, 10)),
            _back(model(small.flip(-1)).flip(-1), (15, 10)),
        ]
        expected = torch.stack([p.sigmoid() for p in passes]).mean(0)
    assert out.shape == (2, 1, 15, 10)
    torch.testing.assert_close(out.sigmoid(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("h", "w"), [(17, 23), (5, 3), (1, 1), (31, 8)])
def test_output_has_the_input_size_for_odd_sizes(h: int, w: int) -> None:
    cfg = TTAConfig(flip=True, scales=(0.1, 0.75, 1.0, 1.25))  # 0.1 of a few pixels is 1 pixel
    with torch.no_grad():
        out = augmented_logits(_model(5), _batch(h, w), cfg, sigmoid=False)
    assert out.shape == (2, 5, h, w) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("cfg", "passes"),
    [
        (TTAConfig(), 6),
        (TTAConfig(flip=False), 3),
        (TTAConfig(flip=True, scales=(1.0,)), 2),
        (TTAConfig(flip=False, scales=[0.5, 1.0, 1.5, 2.0]), 4),
    ],
)
def test_passes_count_the_forward_passes(cfg: TTAConfig, passes: int) -> None:
    shapes = []

    def counting(batch: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(batch.shape[-2:]))
        return torch.zeros(batch.shape[0], 2, *batch.shape[-2:])

    augmented_logits(counting, _batch(20, 30), cfg, sigmoid=False)
    assert tta_passes(cfg) == passes == len(shapes)
    assert isinstance(cfg.scales, tuple)
    expected = {(round(s * 20), round(s * 30)) for s in cfg.scales}
    assert set(shapes) == expected


def test_overconfident_logits_give_finite_results() -> None:
    """Probabilities that underflow float32 (e^-10000) still give finite log-probabilities."""

    def extreme(batch: torch.Tensor) -> torch.Tensor:
        z = torch.zeros(batch.shape[0], 3, *batch.shape[-2:])
        z[:, 0], z[:, 2] = 1e4, -1e4
        return z

    out = augmented_logits(extreme, _batch(4, 5), TTAConfig(), sigmoid=False)
    assert torch.isfinite(out).all() and (out.argmax(1) == 0).all()
    torch.testing.assert_close(out.softmax(1)[:, 0], torch.ones(2, 4, 5))

    def sure(batch: torch.Tensor) -> torch.Tensor:
        return torch.full((batch.shape[0], 1, *batch.shape[-2:]), 1e4)

    out = augmented_logits(sure, _batch(4, 5), TTAConfig(), sigmoid=True)
    assert torch.isfinite(out).all() and (out > 80).all()
    out = augmented_logits(lambda b: -sure(b), _batch(4, 5), TTAConfig(), sigmoid=True)
    assert torch.isfinite(out).all() and (out < -80).all()


def test_augmented_logits_blend_in_sliding_windows() -> None:
    """TTA logits drop in where plain logits go: for a per-pixel model the flip changes nothing, so
    sliding-window TTA logits are the whole image's log-probabilities."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1).eval()
    image = np.random.default_rng(0).integers(0, 256, (40, 37, 3), dtype=np.uint8)

    def preprocess(crop: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0

    cfg = TTAConfig(flip=True, scales=(1.0,))
    with torch.no_grad():
        slid = slide_logits(
            image,
            preprocess,
            lambda b: augmented_logits(model, b, cfg, sigmoid=False),
            4,
            TileConfig(mode="slide", window=16, overlap=0.5),
        )
        whole = model(preprocess(image)[None])[0].log_softmax(0)
    torch.testing.assert_close(slid, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scales": ()}, "must not be empty"),
        ({"scales": (1.0, 0.0)}, "> 0, got 0.0"),
        ({"scales": (-0.5,)}, "> 0, got -0.5"),
        ({"scales": (float("nan"),)}, "finite"),
        ({"scales": "1.0"}, "list of numbers"),
        ({"flip": "yes"}, "flip"),
    ],
)
def test_bad_tta_configs_are_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(PixelwiseError, match=match):
        TTAConfig(**kwargs)


def test_channel_count_must_match_the_output_kind() -> None:
    x, cfg = _batch(6, 6), TTAConfig(flip=False, scales=(1.0,))
    with pytest.raises(PixelwiseError, match="sigmoid=True needs one logit channel"):
        augmented_logits(_model(3), x, cfg, sigmoid=True)
    with pytest.raises(PixelwiseError, match="one-channel model is a sigmoid model"):
        augmented_logits(_model(1), x, cfg, sigmoid=False)
    with pytest.raises(PixelwiseError, match="N×C×H×W"):
        augmented_logits(_model(3), x[0], cfg, sigmoid=False)
