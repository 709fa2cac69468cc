"""Rare-class oversampling: the weights by hand, the seeded draws, the plan's rule, a training run."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import study_dataset

from pixelwise.config import RareClassSampling, RunConfig
from pixelwise.data.sampling import class_draw_probabilities, rare_class_weights
from pixelwise.engine.distributed import DistContext
from pixelwise.engine.train import setup, train_order
from pixelwise.errors import PixelwiseError

# three images, two classes: class 1 holds 10 of 400 labelled pixels, all in image 2
PIXELS = np.array([[100, 0], [100, 0], [190, 10]])


def test_class_probabilities_by_hand() -> None:
    f = np.array([0.975, 0.025])
    p = class_draw_probabilities(f, 0.1)
    e0, e1 = math.exp(0.025 / 0.1), math.exp(0.975 / 0.1)
    assert p == pytest.approx([e0 / (e0 + e1), e1 / (e0 + e1)])
    assert class_draw_probabilities(np.array([0.5, 0.5]), 0.01) == pytest.approx([0.5, 0.5])
    with pytest.raises(PixelwiseError, match="temperature"):
        class_draw_probabilities(f, 0.0)


def test_weights_by_hand() -> None:
    # class 0 is held by all 3 images, class 1 by image 2 only (10 / 200 = 5% >= min_share)
    p = class_draw_probabilities(np.array([390 / 400, 10 / 400]), 0.1)
    w = rare_class_weights(PIXELS, temperature=0.1, min_share=0.01, share=0.5)
    expected = [0.5 / 3 + 0.5 * p[0] / 3] * 2 + [0.5 / 3 + 0.5 * (p[0] / 3 + p[1])]
    assert w == pytest.approx(expected)
    assert w.sum() == pytest.approx(1.0)
    assert w[2] > 2 * w[0]  # the image holding the rare class is drawn more often


def test_speckles_do_not_count_and_share_zero_is_uniform() -> None:
    # 10 px of 200 is 5%: below a min_share of 10% the rare class counts as held by no image
    w = rare_class_weights(PIXELS, temperature=0.1, min_share=0.1, share=1.0)
    assert w == pytest.approx([1 / 3] * 3)
    assert rare_class_weights(PIXELS, temperature=0.1, min_share=0.0, share=0.0) == pytest.approx(
        [1 / 3] * 3
    )
    with pytest.raises(PixelwiseError, match="share"):
        rare_class_weights(PIXELS, temperature=0.1, min_share=0.0, share=1.5)


class _Sized:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def test_weighted_order_is_seeded_and_follows_the_weights() -> None:
    ds, one = _Sized(3), DistContext()
    w = [0.1, 0.1, 0.8]
    a = train_order(ds, one, 5, 2, samples=3000, weights=w)
    assert a == train_order(ds, one, 5, 2, samples=3000, weights=w)  # resumable: a pure function
    assert a != train_order(ds, one, 5, 3, samples=3000, weights=w)
    share = Counter(a)[2] / len(a)
    assert 0.77 < share < 0.83  # 0.8 expected; binomial sd 0.007
    assert len(train_order(ds, one, 5, 0, weights=w)) == 3  # one split's length by default
    ranks = [train_order(ds, DistContext(rank=r, world_size=2), 5, 0, 5, w) for r in range(2)]
    assert [len(x) for x in ranks] == [3, 3]  # padded to equal shares


def test_plan_oversamples_only_rare_classes(tmp_path: Path) -> None:
    from pixelwise.auto.fingerprint import Fingerprint
    from pixelwise.auto.plan import _sampling

    common = Fingerprint.__new__(Fingerprint)
    object.__setattr__(common, "num_classes", 2)
    object.__setattr__(common, "class_names", ["a", "b"])
    object.__setattr__(common, "class_frequency", [0.7, 0.3])
    assert _sampling(common)[0] is None
    object.__setattr__(common, "class_frequency", [0.995, 0.005])
    rcs, why = _sampling(common)
    assert rcs == {"temperature": 0.01, "min_share": 0.001, "share": 0.5}
    assert "'b' holds 0.50%" in why
    RunConfig(data={"dataset": "x"}, train={"rare_class_sampling": rcs})  # a valid recipe


def test_setup_weights_the_training_images(tmp_path: Path) -> None:
    data = study_dataset(tmp_path / "ds")
    cfg = RunConfig(
        data={"dataset": str(data), "train_split": "train", "val_split": None},
        model={"name": "unet", "params": {"base_channels": 4, "depth": 2}},
        augment={"crop_size": [16, 16], "scale": [1.0, 1.0]},
        train={"epochs": 1, "batch_size": 2, "num_workers": 0, "device": "cpu"},
    )
    assert setup(cfg, tmp_path / "uniform", progress=False).sample_weights is None
    cfg.train.rare_class_sampling = RareClassSampling(temperature=0.01, min_share=0.0, share=1.0)
    state = setup(cfg, tmp_path / "rcs", progress=False)
    w = np.array(state.sample_weights)
    assert len(w) == len(state.train_ds) and w.sum() == pytest.approx(1.0)
    from pixelwise.data.validate import check_split

    counts = check_split(state.spec, "train").sample_class_pixels
    assert w == pytest.approx(
        rare_class_weights(counts, temperature=0.01, min_share=0.0, share=1.0)
    )
