"""Active learning (pixelwise.annotate.active): hand-computed uncertainty scores, their invariances,
and the ranking of images by a tiny per-pixel model through the Segmenter."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import load_bench_module, three_class_meta
from PIL import Image
from torch import nn

from pixelwise.annotate import (
    UNCERTAINTY_KINDS,
    image_uncertainty,
    random_order,
    rank_by_uncertainty,
    uncertainty_map,
)
from pixelwise.engine.predictor import Segmenter
from pixelwise.errors import PixelwiseError


def _probs(*p: float, h: int = 2, w: int = 3) -> np.ndarray:
    """K×H×W probabilities, the same distribution ``p`` at every pixel."""
    return np.broadcast_to(np.array(p, np.float32)[:, None, None], (len(p), h, w)).copy()


# ---- scores ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", UNCERTAINTY_KINDS)
@pytest.mark.parametrize("k", [2, 3, 11])
def test_uniform_is_one_and_one_hot_is_zero(kind: str, k: int) -> None:
    uniform = uncertainty_map(_probs(*[1.0 / k] * k), kind)
    assert uniform.shape == (2, 3) and uniform.dtype == np.float32
    np.testing.assert_allclose(uniform, 1.0, atol=1e-6)
    one_hot = uncertainty_map(_probs(*([1.0] + [0.0] * (k - 1))), kind)
    np.testing.assert_allclose(one_hot, 0.0, atol=1e-6)  # log 0 does not make a NaN


@pytest.mark.parametrize(
    ("p", "kind", "expected"),
    [
        ((0.75, 0.25), "entropy", -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)),
        ((0.75, 0.25), "margin", 0.5),
        ((0.75, 0.25), "least_confident", 0.5),  # (1 - 0.75) / (1 - 1/2)
        (
            (0.5, 0.3, 0.2),
            "entropy",
            -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)) / math.log(3),
        ),
        ((0.5, 0.3, 0.2), "margin", 0.8),  # 1 - (0.5 - 0.3)
        ((0.2, 0.3, 0.5), "margin", 0.8),  # wherever the top two sit
        ((0.5, 0.3, 0.2), "least_confident", 0.75),  # (1 - 0.5) / (2/3)
    ],
)
def test_hand_computed_scores(p: tuple[float, ...], kind: str, expected: float) -> None:
    np.testing.assert_allclose(uncertainty_map(_probs(*p), kind), expected, rtol=1e-5)
    assert image_uncertainty(_probs(*p), kind) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", UNCERTAINTY_KINDS)
def test_invariances(kind: str) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7, 9)).astype(np.float32)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    batched = uncertainty_map(probs, kind)
    assert batched.shape == (2, 7, 9)
    assert batched.min() >= 0.0 and batched.max() <= 1.0
    # one image at a time = the batch
    for i in range(2):
        np.testing.assert_allclose(uncertainty_map(probs[i], kind), batched[i], atol=1e-6)
    # the order of the classes does not matter
    perm = rng.permutation(5)
    np.testing.assert_allclose(uncertainty_map(probs[:, perm], kind), batched, atol=1e-6)
    # nor the orientation of the image: the map moves with it
    flipped = uncertainty_map(probs[..., ::-1], kind)
    np.testing.assert_allclose(flipped, batched[..., ::-1], atol=1e-6)
    # a sharper distribution (logits × 3) is less uncertain on average
    sharper = torch.softmax(torch.from_numpy(3 * logits), dim=1).numpy()
    assert uncertainty_map(sharper, kind).mean() < batched.mean()


def test_bad_input_is_one_line_error() -> None:
    with pytest.raises(PixelwiseError, match="unknown uncertainty kind 'variance'"):
        uncertainty_map(_probs(0.5, 0.5), "variance")
    with pytest.raises(PixelwiseError, match="K ≥ 2"):
        uncertainty_map(np.ones((1, 2, 2), np.float32))
    with pytest.raises(PixelwiseError, match="K ≥ 2"):
        uncertainty_map(np.ones((2, 2), np.float32))


# ---- ranking -----------------------------------------------------------------------------------------


def _identity_segmenter(gain: float = 2.0) -> Segmenter:
    """A per-pixel model whose logits are ``gain`` × the normalised colour: a grey pixel gives equal
    logits (uniform probabilities), a saturated one a confident class."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(gain * torch.eye(3)[:, :, None, None])
        conv.bias.zero_()
    return Segmenter(conv.eval(), three_class_meta(), device="cpu", amp="off")


def _fill(rgb: tuple[int, int, int], h: int = 6, w: int = 8) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


IMAGES = {
    "red": _fill((255, 0, 0)),  # confident
    "grey": _fill((128, 128, 128)),  # uniform: the most uncertain
    "orange": _fill((255, 170, 0)),  # red and green compete
    "half": np.concatenate([_fill((128, 128, 128), 6, 4), _fill((0, 255, 0), 6, 4)], axis=1),
}


@pytest.mark.parametrize("kind", UNCERTAINTY_KINDS)
def test_ranking_on_a_per_pixel_model(kind: str) -> None:
    seg = _identity_segmenter()
    ranked = rank_by_uncertainty(seg, IMAGES, kind=kind)
    assert [k for k, _ in ranked] == ["grey", "half", "orange", "red"]
    assert ranked[0][1] == pytest.approx(1.0, abs=1e-3)  # 128 is 0.502: nearly exactly grey
    for key, score in ranked:  # each score is the mean map of the Segmenter's probabilities
        expected = image_uncertainty(seg.predict_proba(IMAGES[key]), kind)
        assert score == pytest.approx(expected, abs=1e-6)


def test_ranking_reads_files_batches_by_size_and_breaks_ties_by_input_order(tmp_path) -> None:
    seg = _identity_segmenter()
    images = {**IMAGES, "red_big": _fill((255, 0, 0), 10, 12), "grey_2": _fill((128, 128, 128))}
    paths = []
    for key, image in images.items():
        Image.fromarray(image).save(tmp_path / f"{key}.png")
        paths.append(tmp_path / f"{key}.png")
    by_file = rank_by_uncertainty(seg, paths, batch_size=3)
    assert [p.rsplit("/", 1)[-1] for p, _ in by_file[:2]] == ["grey.png", "grey_2.png"]
    reversed_order = rank_by_uncertainty(seg, paths[::-1], batch_size=3)
    assert [p.rsplit("/", 1)[-1] for p, _ in reversed_order[:2]] == ["grey_2.png", "grey.png"]
    one_by_one = dict(rank_by_uncertainty(seg, paths, batch_size=1))
    for path, score in by_file:  # batching does not change a score
        assert one_by_one[path] == pytest.approx(score, abs=1e-6)
    with pytest.raises(PixelwiseError, match="batch_size"):
        rank_by_uncertainty(seg, paths, batch_size=0)
    with pytest.raises(PixelwiseError, match="unknown uncertainty kind"):
        rank_by_uncertainty(seg, paths, kind="bald")


def test_random_order_is_a_seeded_permutation() -> None:
    ids = [f"im{i}" for i in range(50)]
    a = random_order(ids, seed=3)
    assert sorted(a) == sorted(ids) and a != ids
    assert random_order(ids, seed=3) == a
    assert random_order(ids, seed=4) != a
    assert ids == [f"im{i}" for i in range(50)]  # the input is not shuffled in place


# ---- the simulation (bench/active_learning.py) ---------------------------------------------------------


@pytest.mark.slow
def test_simulation_smoke_runs_and_resumes(tmp_path, require_data) -> None:
    require_data("camvid")
    bench = load_bench_module("active_learning")
    argv = ["--smoke", "--seeds", "0", "--out", str(tmp_path / "runs")]
    argv += ["--plot", str(tmp_path / "al.png"), "--results", str(tmp_path / "al.json")]
    assert bench.main(argv) == 0
    results = json.loads((tmp_path / "al.json").read_text())
    replicate = results["replicates"]["0"]
    for strategy in bench.STRATEGIES:
        assert [p["labelled"] for p in replicate["curves"][strategy]] == [4, 6, 8]
    assert set(results["differences"]) == {"6", "8"}
    steps = replicate["steps"]
    shared = set(steps["shared/4"]["labelled_stems"])
    for strategy in bench.STRATEGIES:  # every budget grows the previous labelled set
        assert shared < set(steps[f"{strategy}/6"]["labelled_stems"])
        assert set(steps[f"{strategy}/6"]["labelled_stems"]) < set(
            steps[f"{strategy}/8"]["labelled_stems"]
        )
    scores = steps["uncertainty/6"]["selection"]["scores"]
    assert scores == sorted(scores, reverse=True)
    assert (tmp_path / "al.png").stat().st_size > 0
    assert "| 8 |" in (tmp_path / "al.md").read_text()  # the smoke run's page, beside its JSON
    # a finished step is skipped; a step whose result is missing is trained again from its
    # checkpoint (resumed, not restarted)
    state_path = tmp_path / "runs" / "seed0" / "state.json"
    state = json.loads(state_path.read_text())
    del state["steps"]["random/8"]["result"]
    state_path.write_text(json.dumps(state))
    first = tmp_path / "runs" / "seed0" / "shared_b4" / "best.ckpt"
    mtime = first.stat().st_mtime_ns
    assert bench.main(argv) == 0
    assert first.stat().st_mtime_ns == mtime
    again = json.loads((tmp_path / "al.json").read_text())["replicates"]["0"]
    assert again["steps"]["random/8"]["result"]["miou"] == pytest.approx(
        steps["random/8"]["result"]["miou"]
    )
    with pytest.raises(SystemExit, match="other settings"):
        bench.main([*argv[:-2], "--results", str(tmp_path / "x.json"), "--kind", "margin"])
