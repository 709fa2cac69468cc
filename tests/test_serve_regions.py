"""``pixelwise.engine.regions`` on hand-made masks: class areas, 8-connected regions with their boxes,
COCO run-length encoding (column-major) and its decoding. No model, no server."""

from __future__ import annotations

import numpy as np
import pytest

from pixelwise.engine.regions import labels_rle, regions_summary, rle_decode, rle_encode
from pixelwise.errors import PixelwiseError

NAMES = ["bg", "a", "b"]


def test_classes_and_regions_of_a_hand_made_mask() -> None:
    labels = np.array(
        [
            [1, 1, 0, 0, 2],
            [1, 0, 0, 0, 2],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 1, 1],
        ],
        dtype=np.uint8,
    )
    s = regions_summary(labels, NAMES)
    assert (s["width"], s["height"], s["regions_total"]) == (5, 4, 4)
    assert s["classes"] == [
        {"index": 0, "name": "bg", "pixels": 12, "fraction": 12 / 20},
        {"index": 1, "name": "a", "pixels": 6, "fraction": 6 / 20},
        {"index": 2, "name": "b", "pixels": 2, "fraction": 2 / 20},
    ]
    # (1,0)-(2,2) do not touch; (2,2)-(3,3) touch at a corner: 8-connected, one region
    assert s["regions"] == [
        {"class": "bg", "index": 0, "bbox": [0, 0, 5, 4], "area": 12},
        {"class": "a", "index": 1, "bbox": [0, 0, 2, 2], "area": 3},
        {"class": "a", "index": 1, "bbox": [2, 2, 5, 4], "area": 3},
        {"class": "b", "index": 2, "bbox": [4, 0, 5, 2], "area": 2},
    ]


def test_corner_touching_pixels_are_one_region_and_a_gap_splits() -> None:
    diagonal = np.eye(4, dtype=np.int64)
    s = regions_summary(diagonal, ["bg", "fg"])
    fg = [r for r in s["regions"] if r["index"] == 1]
    assert fg == [{"class": "fg", "index": 1, "bbox": [0, 0, 4, 4], "area": 4}]
    # the background's two triangles meet only at corners, as (0, 1) and (1, 0) do: one region
    # when 8-connected (4-connectivity would make two)
    bg = [r for r in s["regions"] if r["index"] == 0]
    assert len(bg) == 1 and bg[0]["area"] == 12
    gap = np.array([[1, 0, 1]])
    assert [r["bbox"] for r in regions_summary(gap, ["bg", "fg"])["regions"] if r["index"]] == [
        [0, 0, 1, 1],
        [2, 0, 3, 1],
    ]


def test_one_class_everywhere_and_absent_classes() -> None:
    s = regions_summary(np.full((3, 2), 2, np.uint8), NAMES)
    assert s["classes"] == [{"index": 2, "name": "b", "pixels": 6, "fraction": 1.0}]
    assert s["regions"] == [{"class": "b", "index": 2, "bbox": [0, 0, 2, 3], "area": 6}]


def test_max_regions_keeps_the_largest() -> None:
    labels = np.zeros((3, 9), np.uint8)
    labels[0, 0] = 1
    labels[0, 2:5] = 1
    labels[2, 6:8] = 2
    s = regions_summary(labels, NAMES, max_regions=2)
    assert s["regions_total"] == 4
    assert [(r["index"], r["area"]) for r in s["regions"]] == [(0, 21), (1, 3)]
    assert regions_summary(labels, NAMES, max_regions=0)["regions"] == []


def test_bad_labels_are_refused() -> None:
    with pytest.raises(PixelwiseError, match="class indices 0..3"):
        regions_summary(np.array([[0, 3]]), NAMES)
    with pytest.raises(PixelwiseError, match="H×W integer"):
        regions_summary(np.zeros((2, 2), np.float32), NAMES)
    with pytest.raises(PixelwiseError, match="H×W integer"):
        regions_summary(np.zeros((1, 2, 2), np.uint8), NAMES)
    with pytest.raises(PixelwiseError, match="max_regions"):
        regions_summary(np.zeros((2, 2), np.uint8), NAMES, max_regions=-1)


def test_rle_is_column_major_and_starts_with_zeros() -> None:
    # columns: (0, 1), (1, 1) → 0 1 1 1
    assert rle_encode(np.array([[0, 1], [1, 1]])) == {"size": [2, 2], "counts": [1, 3]}
    # first pixel set: a zero-length run of zeros first
    assert rle_encode(np.array([[1, 0], [0, 0]])) == {"size": [2, 2], "counts": [0, 1, 3]}
    assert rle_encode(np.zeros((2, 3), bool)) == {"size": [2, 3], "counts": [6]}
    assert rle_encode(np.ones((2, 3), bool)) == {"size": [2, 3], "counts": [0, 6]}
    # 2×3, read down the columns: 1 0 | 0 1 | 1 1
    rle = rle_encode(np.array([[1, 0, 1], [0, 1, 1]]))
    assert rle == {"size": [2, 3], "counts": [0, 1, 2, 3]}


def test_rle_round_trip_and_labels_rle() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (7, 11), dtype=np.uint8)
    labels[labels == 2] = 0  # class 2 absent
    encoded = labels_rle(labels, NAMES)
    assert [(c["index"], c["name"]) for c in encoded] == [(0, "bg"), (1, "a")]
    for c in encoded:
        assert c["size"] == [7, 11] and sum(c["counts"]) == 77
        assert np.array_equal(rle_decode(c), labels == c["index"])
    with pytest.raises(PixelwiseError, match="add up to"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})
