"""Segmentation scores, all derived from one accumulated confusion matrix."""

from .confusion import ConfusionMatrix, SegmentationScores

__all__ = ["ConfusionMatrix", "SegmentationScores"]
