"""Datasets: definitions (YAML or inferred), readers, mask decoding, transforms and checks."""

from .classes import IGNORE_INDEX, ClassInfo
from .dataset import SameSizeBatchSampler, SegmentationDataset, load_pair
from .io import read_image, read_mask, write_png
from .spec import (
    DatasetSpec,
    MaskSpec,
    Sample,
    SplitSpec,
    decode_mask,
    infer_spec,
    load_dataset_spec,
    resolve_split,
)
from .transforms import build_eval_transform, build_train_transform, default_normalization
from .validate import SplitReport, check_dataset, check_split

__all__ = [
    "IGNORE_INDEX",
    "ClassInfo",
    "DatasetSpec",
    "MaskSpec",
    "Sample",
    "SplitSpec",
    "SplitReport",
    "SegmentationDataset",
    "SameSizeBatchSampler",
    "build_eval_transform",
    "build_train_transform",
    "check_dataset",
    "check_split",
    "decode_mask",
    "default_normalization",
    "infer_spec",
    "load_dataset_spec",
    "load_pair",
    "read_image",
    "read_mask",
    "resolve_split",
    "write_png",
]
