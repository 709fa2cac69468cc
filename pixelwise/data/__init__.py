"""Datasets: definitions (YAML or inferred), format readers, mask encodings, transforms, checks, and\nthe tools behind ``pixelwise data`` (inspect, convert, split)."""

from .classes import IGNORE_INDEX, ClassInfo
from .convert import convert_dataset
from .dataset import SameSizeBatchSampler, SegmentationDataset, load_pair
from .encodings import MaskEncoding, get_encoding, list_encodings, register_encoding
from .formats import DatasetFormat, get_format, list_formats, register_format
from .inspect import inspect_dataset
from .io import read_image, read_mask, write_png
from .spec import (
    DatasetSpec,
    MaskSpec,
    Sample,
    SplitSpec,
    decode_mask,
    encode_mask,
    infer_spec,
    load_dataset_spec,
    resolve_split,
)
from .split import split_dataset
from .transforms import build_eval_transform, build_train_transform, default_normalization
from .validate import SplitReport, check_dataset, check_split

__all__ = [
    "IGNORE_INDEX",
    "ClassInfo",
    "DatasetFormat",
    "MaskEncoding",
    "convert_dataset",
    "get_encoding",
    "get_format",
    "inspect_dataset",
    "list_encodings",
    "list_formats",
    "register_encoding",
    "register_format",
    "split_dataset",
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
    "encode_mask",
    "infer_spec",
    "load_dataset_spec",
    "load_pair",
    "read_image",
    "read_mask",
    "resolve_split",
    "write_png",
]
