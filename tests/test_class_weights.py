"""Class weights from pixel counts: the three formulas on hand-made counts, per-image totals from
check_split, the recipe syntax (a list or a scheme name), and ``pixelwise data weights``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from pixelwise.cli import main
from pixelwise.config import LossConfig, RunConfig
from pixelwise.data import check_split, load_dataset_spec
from pixelwise.data.validate import SplitReport
from pixelwise.engine.train import resolve_class_weights
from pixelwise.errors import PixelwiseError
from pixelwise.losses import class_weights, effective_number, inverse_frequency, median_frequency


def test_inverse_frequency_hand_computed() -> None:
    # N = 100 labelled pixels, 3 classes present: w_c = 100 / (3 n_c); an absent class gets 0
    w = inverse_frequency([10, 30, 60, 0])
    np.testing.assert_allclose(w, [10 / 3, 10 / 9, 5 / 9, 0.0])
    # every present class carries the same total weight n_c * w_c = N / 3
    np.testing.assert_allclose((w * [10, 30, 60, 0])[:3], [100 / 3] * 3)


def test_median_frequency_hand_computed() -> None:
    # f_c = n_c / P_c = 10/50, 30/100, 60/100 = 0.2, 0.3, 0.6; median 0.3 → w = 1.5, 1, 0.5
    np.testing.assert_allclose(median_frequency([10, 30, 60], [50, 100, 100]), [1.5, 1.0, 0.5])
    # without per-image totals every P_c = N = 100: f = 0.1, 0.3, 0.6 → w = 3, 1, 0.5
    np.testing.assert_allclose(median_frequency([10, 30, 60]), [3.0, 1.0, 0.5])
    # an even number of present classes: the median is the mean of the middle two; absent → 0.
    # N = 200: f = 0.05, 0.15, 0.3, 0.5; median (0.15 + 0.3) / 2 = 0.225
    np.testing.assert_allclose(median_frequency([10, 30, 0, 60, 100]), [4.5, 1.5, 0.0, 0.75, 0.45])
    with pytest.raises(PixelwiseError, match="at least"):
        median_frequency([10, 30], [5, 100])


def test_effective_number_hand_computed() -> None:
    # beta 0.9: E_n = (1 - 0.9^n) / 0.1 = 1, 1.9, 2.71 for n = 1, 2, 3; w ∝ 1 / E_n, sum = 3
    inv = np.array([1 / 1, 1 / 1.9, 1 / 2.71])
    np.testing.assert_allclose(effective_number([1, 2, 3], beta=0.9), 3 * inv / inv.sum())
    # beta 0: uniform; beta → 1: proportional to inverse frequency
    np.testing.assert_allclose(effective_number([5, 50, 500], beta=0.0), [1.0, 1.0, 1.0])
    inv = inverse_frequency([5, 50, 500])
    np.testing.assert_allclose(
        effective_number([5, 50, 500], beta=1 - 1e-9), 3 * inv / inv.sum(), rtol=1e-5
    )
    # millions of pixels: beta = 0.9999 saturates to uniform
    np.testing.assert_allclose(effective_number([10**6, 10**7], beta=0.9999), [1.0, 1.0])
    # beta 0.5: E_1 = 1, E_2 = (1 - 0.25) / 0.5 = 1.5 → w ∝ 1, 2/3, summing to 2 present classes
    np.testing.assert_allclose(effective_number([1, 2, 0], beta=0.5), [6 / 5, 4 / 5, 0.0])
    with pytest.raises(PixelwiseError, match="beta"):
        effective_number([1, 2], beta=1.0)


def test_class_weights_by_name_and_bad_input() -> None:
    w = class_weights("median_frequency", [10, 30, 60], image_pixels=[50, 100, 100])
    assert isinstance(w, list) and all(isinstance(x, float) for x in w)
    assert w == pytest.approx([1.5, 1.0, 0.5])
    with pytest.raises(PixelwiseError, match="unknown class-weight scheme 'median'"):
        class_weights("median", [1, 2])
    with pytest.raises(PixelwiseError, match="no labelled pixels"):
        class_weights("inverse_frequency", [0, 0])


def _weights_dataset(root: Path) -> Path:
    """Two 4×4 index masks (255 unlabelled):
    a: 8 px class 0, 4 px class 1, 4 px unlabelled   (12 labelled)
    b: 12 px class 0, 4 px class 2                   (16 labelled)
    class pixels (20, 4, 4); labelled pixels of the images holding each class (28, 12, 16)."""
    a = np.zeros((4, 4), np.uint8)
    a[2] = 1
    a[3] = 255
    b = np.zeros((4, 4), np.uint8)
    b[:, 3] = 2
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for stem, m in (("a", a), ("b", b)):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(m).save(root / "masks" / f"{stem}.png")
    return root


def test_check_split_counts_pixels_of_images_holding_each_class(tmp_path: Path) -> None:
    spec = load_dataset_spec(_weights_dataset(tmp_path / "d"))
    rep = check_split(spec, "all")
    np.testing.assert_array_equal(rep.class_pixels, [20, 4, 4])
    np.testing.assert_array_equal(rep.class_image_pixels, [28, 12, 16])
    assert rep.ignored_pixels == 4


def _cfg(**loss) -> RunConfig:
    return RunConfig(data={"dataset": "x"}, loss=loss)


def test_recipe_names_a_scheme_resolved_from_the_train_split(
    caplog: pytest.LogCaptureFixture,
) -> None:
    report = SplitReport(
        split="train",
        class_pixels=np.array([20, 4, 4, 0]),
        class_image_pixels=np.array([28, 12, 16, 0]),
    )
    names = ["a", "b", "c", "d"]
    with caplog.at_level(logging.INFO, logger="pixelwise.engine.train"):
        w = resolve_class_weights(_cfg(class_weights="median_frequency"), names, report)
    # f = 20/28, 4/12, 4/16; median 1/3 → 7/15, 1, 4/3; absent class d → 0, with a warning
    np.testing.assert_allclose(w, [7 / 15, 1.0, 4 / 3, 0.0])
    assert "d have no pixels" in caplog.text and "median_frequency" in caplog.text
    w = resolve_class_weights(_cfg(class_weights="inverse_frequency"), names, report)
    np.testing.assert_allclose(w, [28 / 60, 28 / 12, 28 / 12, 0.0])
    w = resolve_class_weights(
        _cfg(class_weights="effective_number", class_weights_beta=0.0), names, report
    )
    assert w == [1.0, 1.0, 1.0, 0.0]
    assert resolve_class_weights(_cfg(), names, report) is None
    assert resolve_class_weights(_cfg(class_weights=[1, 2, 3, 4]), names, report) == [1, 2, 3, 4]
    with pytest.raises(PixelwiseError, match="3 values; the dataset has 4 classes"):
        resolve_class_weights(_cfg(class_weights=[1, 2, 3]), names, report)


def test_loss_config_typing() -> None:
    assert LossConfig(class_weights="median_frequency").class_weights == "median_frequency"
    assert LossConfig(class_weights=[1, 2]).class_weights == [1.0, 2.0]
    with pytest.raises(ValueError, match="unknown class-weight scheme 'median'"):
        LossConfig(class_weights="median")
    with pytest.raises(ValueError):
        LossConfig(class_weights_beta=1.0)
    with pytest.raises(ValueError):
        LossConfig(terms=[])


def test_cli_data_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(_weights_dataset(tmp_path / "d"))
    main(["data", "weights", data, "--split", "all", "--beta", "0"])
    out = capsys.readouterr().out
    assert "median_frequency: [0.4667, 1.0000, 1.3333]" in out
    assert "inverse_frequency: [0.4667, 2.3333, 2.3333]" in out
    assert "effective_number: [1.0000, 1.0000, 1.0000]" in out
    for name in ("class_0", "class_1", "class_2"):
        assert name in out
