"""ConfusionMatrix: hand-computed scores, ignored and absent classes, batch-size invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pixelwise.errors import PixelwiseError
from pixelwise.metrics import ConfusionMatrix

# A 3-class example, 12 pixels, 2 of them ignored (target 255). Written pixel by pixel:
#   ground truth 0: predicted 0, 0, 0, 0, 2      → row [4, 0, 1]
#   ground truth 1: predicted 1, 1, 2            → row [0, 2, 1]
#   ground truth 2: predicted 0, 2               → row [1, 0, 1]
TARGET = [[0, 0, 0, 0, 0, 1], [1, 1, 2, 2, 255, 255]]
PRED = [[0, 0, 0, 0, 2, 1], [1, 2, 0, 2, 1, 0]]
MATRIX = [[4, 0, 1], [0, 2, 1], [1, 0, 1]]
# By hand: TP = (4, 2, 1); ground truth per class (5, 3, 2); predicted (5, 2, 3); 10 pixels counted.
IOU = [4 / (5 + 5 - 4), 2 / (3 + 2 - 2), 1 / (2 + 3 - 1)]  # 2/3, 2/3, 1/4
DICE = [2 * 4 / (5 + 5), 2 * 2 / (3 + 2), 2 * 1 / (2 + 3)]  # 0.8, 0.8, 0.4
ACCURACY = [4 / 5, 2 / 3, 1 / 2]
PIXEL_ACCURACY = 7 / 10
MEAN_ACCURACY = (4 / 5 + 2 / 3 + 1 / 2) / 3
MIOU = (2 / 3 + 2 / 3 + 1 / 4) / 3
MEAN_DICE = (0.8 + 0.8 + 0.4) / 3
FW_IOU = 5 / 10 * 2 / 3 + 3 / 10 * 2 / 3 + 2 / 10 * 1 / 4  # ground-truth frequency × IoU


def _cm(num_classes: int, target, pred) -> ConfusionMatrix:
    cm = ConfusionMatrix(num_classes)
    cm.update(torch.tensor(pred), torch.tensor(target))
    return cm


def test_hand_computed_example() -> None:
    cm = _cm(3, TARGET, PRED)
    assert cm.matrix.tolist() == MATRIX
    s = cm.scores()
    np.testing.assert_allclose(s.iou, IOU)
    np.testing.assert_allclose(s.dice, DICE)
    np.testing.assert_allclose(s.accuracy, ACCURACY)
    assert s.support.tolist() == [5, 3, 2]
    assert s.present.tolist() == [True, True, True]
    assert s.pixel_accuracy == pytest.approx(PIXEL_ACCURACY)
    assert s.mean_accuracy == pytest.approx(MEAN_ACCURACY)
    assert s.miou == pytest.approx(MIOU)
    assert s.mean_dice == pytest.approx(MEAN_DICE)
    assert s.fw_iou == pytest.approx(FW_IOU)
    assert s.fw_iou == pytest.approx(0.5833333333)


def test_ignored_pixels_never_count() -> None:
    cm = _cm(3, TARGET, PRED)
    pred = torch.tensor(PRED)
    pred[torch.tensor(TARGET) == 255] = 2  # other predictions on the ignored pixels
    cm2 = ConfusionMatrix(3)
    cm2.update(pred, torch.tensor(TARGET))
    assert torch.equal(cm.matrix, cm2.matrix)
    assert int(cm.matrix.sum()) == 10
    # even a prediction outside the classes is fine where the target is ignored
    pred[torch.tensor(TARGET) == 255] = 77
    cm2.reset()
    cm2.update(pred, torch.tensor(TARGET))
    assert torch.equal(cm.matrix, cm2.matrix)


def test_custom_ignore_index() -> None:
    cm = ConfusionMatrix(2, ignore_index=-1)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, -1, 1]))
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]


def test_class_absent_from_gt_and_prediction_is_nan_and_excluded() -> None:
    s = _cm(4, TARGET, PRED).scores()  # class 3 never occurs
    assert s.present.tolist() == [True, True, True, False]
    assert math.isnan(s.iou[3]) and math.isnan(s.dice[3]) and math.isnan(s.accuracy[3])
    assert s.support[3] == 0
    np.testing.assert_allclose(s.iou[:3], IOU)
    assert s.miou == pytest.approx(MIOU)
    assert s.mean_dice == pytest.approx(MEAN_DICE)
    assert s.mean_accuracy == pytest.approx(MEAN_ACCURACY)
    assert s.fw_iou == pytest.approx(FW_IOU)
    assert s.pixel_accuracy == pytest.approx(PIXEL_ACCURACY)


def test_class_predicted_but_absent_from_gt_counts_as_zero() -> None:
    # ground truth 0: predicted 0, 3; ground truth 1: predicted 1, 1; class 2 absent everywhere
    s = _cm(4, [0, 0, 1, 1], [0, 3, 1, 1]).scores()
    assert s.present.tolist() == [True, True, False, True]
    # IoU: class 0 = 1 / (2 + 1 - 1), class 1 = 2 / 2, class 3 = 0 / (0 + 1 - 0)
    np.testing.assert_allclose(s.iou, [0.5, 1.0, np.nan, 0.0])
    np.testing.assert_allclose(s.dice, [2 / 3, 1.0, np.nan, 0.0])
    assert s.miou == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # class 3 counts, class 2 does not
    assert s.mean_dice == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    # accuracy (recall) is undefined without ground truth: left out of the mean
    np.testing.assert_allclose(s.accuracy, [0.5, 1.0, np.nan, np.nan])
    assert s.mean_accuracy == pytest.approx(0.75)
    assert s.pixel_accuracy == pytest.approx(3 / 4)


def test_empty_matrix_scores_are_nan() -> None:
    s = ConfusionMatrix(2).scores()
    assert np.isnan(s.iou).all() and math.isnan(s.miou) and math.isnan(s.pixel_accuracy)
    assert math.isnan(s.fw_iou)


def _random_split(seed: int = 0, n: int = 12, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (n, 17, 23), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    pred = torch.where(
        torch.rand(target.shape, generator=g) < 0.6,
        target.clamp(max=k - 1),
        torch.randint(0, k, target.shape, generator=g),
    )
    return pred, target


@pytest.mark.parametrize("batch_size", [1, 3, 12])
def test_batch_size_invariance(batch_size: int) -> None:
    pred, target = _random_split()
    whole = ConfusionMatrix(5)
    whole.update(pred, target)
    # reference: a plain count over every non-ignored pixel
    ref = np.zeros((5, 5), np.int64)
    valid = target != 255
    np.add.at(ref, (target[valid].numpy(), pred[valid].numpy()), 1)
    assert whole.matrix.numpy().tolist() == ref.tolist()

    batched = ConfusionMatrix(5)
    for i in range(0, len(pred), batch_size):
        batched.update(pred[i : i + batch_size], target[i : i + batch_size])
    assert torch.equal(batched.matrix, whole.matrix)
    a, b = whole.scores(), batched.scores()
    for field in ("iou", "dice", "accuracy", "support", "present"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    for field in ("miou", "pixel_accuracy", "mean_accuracy", "fw_iou", "mean_dice"):
        assert getattr(a, field) == getattr(b, field)


def test_order_and_merge_invariance() -> None:
    pred, target = _random_split(seed=1)
    forward, backward, left, right = (ConfusionMatrix(5) for _ in range(4))
    for i in range(len(pred)):
        forward.update(pred[i], target[i])
        backward.update(pred[-1 - i], target[-1 - i])
    left.update(pred[:5], target[:5])
    right.update(pred[5:], target[5:])
    left.merge(right)
    assert torch.equal(forward.matrix, backward.matrix)
    assert torch.equal(forward.matrix, left.matrix)
    assert forward.scores().miou == left.scores().miou


def test_reset() -> None:
    cm = _cm(3, TARGET, PRED)
    cm.reset()
    assert int(cm.matrix.sum()) == 0


@pytest.mark.parametrize(
    ("target", "pred"),
    [([0, 3], [0, 1]), ([0, 1], [0, 3]), ([0, 1], [-1, 1]), ([-2, 1], [0, 1])],
)
def test_out_of_range_class_raises(target, pred) -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(PixelwiseError, match="out of range"):
        cm.update(torch.tensor(pred), torch.tensor(target))
    assert int(cm.matrix.sum()) == 0  # nothing half-counted


def test_shape_mismatch_and_bad_num_classes_raise() -> None:
    with pytest.raises(PixelwiseError, match="shape"):
        ConfusionMatrix(3).update(
            torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long)
        )
    with pytest.raises(PixelwiseError, match="num_classes"):
        ConfusionMatrix(0)
