"""Joint image/mask transforms, built on albumentations.

Training: random scale (images too small to be scaled down are padded first), pad (image 0, mask
ignore) to the crop size, random crop, horizontal flip, optional colour jitter, normalise. Evaluation: normalise only, at the image's own size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from .classes import IGNORE_INDEX

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "default_normalization",
    "build_train_transform",
    "build_eval_transform",
    "to_tensor",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet statistics for RGB; 0.5/0.25 for grayscale."""
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.25,))


def _pad_to(height: int, width: int) -> A.PadIfNeeded:
    """Pad to at least ``height`` × ``width``: image with zeros, mask with the ignore index."""
    return A.PadIfNeeded(
        min_height=height,
        min_width=width,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=IGNORE_INDEX,
    )


def build_train_transform(
    *,
    crop_size: Sequence[int] | None,
    scale: Sequence[float] = (0.5, 2.0),
    hflip: bool = True,
    vflip: bool = False,
    rotate90: bool = False,
    color_jitter: float = 0.0,
    mean: Sequence[float],
    std: Sequence[float],
) -> A.Compose:
    """Training augmentation. ``scale`` is the (min, max) resize factor; ``crop_size`` is (H, W)."""
    ops: list[A.BasicTransform] = []
    lo, hi = float(scale[0]), float(scale[1])
    if (lo, hi) != (1.0, 1.0):
        if lo < 1.0:  # a 1-pixel-high image would shrink to nothing: pad it first (mask ignored)
            side = math.ceil(1.0 / lo) + 1
            ops.append(_pad_to(side, side))
        ops.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), p=1.0))
    if crop_size is not None:
        h, w = int(crop_size[0]), int(crop_size[1])
        ops.append(_pad_to(h, w))
        ops.append(A.RandomCrop(height=h, width=w))
    if hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    if vflip:
        ops.append(A.VerticalFlip(p=0.5))
    if rotate90:
        ops.append(A.RandomRotate90(p=0.5))
    if color_jitter > 0:
        ops.append(
            A.ColorJitter(
                brightness=color_jitter,
                contrast=color_jitter,
                saturation=color_jitter,
                hue=min(0.5, color_jitter / 4),
                p=0.8,
            )
        )
    ops.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    return A.Compose(ops)


def build_eval_transform(*, mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    """Evaluation/prediction preprocessing: normalisation only."""
    return A.Compose([A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H×W×C float array → C×H×W float32 tensor."""
    if image.ndim == 2:
        image = image[..., None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
