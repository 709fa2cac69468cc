"""A map-style dataset over one split of a :class:`DatasetSpec`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import PixelwiseError
from .classes import IGNORE_INDEX
from .formats import read_sample_image, read_sample_mask
from .io import image_size, read_mask
from .spec import DatasetSpec, Sample, decode_mask, resolve_split
from .transforms import to_tensor

__all__ = ["SegmentationDataset", "SameSizeBatchSampler", "load_pair", "load_roi"]


def load_pair(sample: Sample, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image and its decoded mask; raise if they disagree in size or the mask is invalid."""
    image = read_sample_image(sample, spec)
    if sample.mask is None:
        return image, None
    try:
        labels, bad = decode_mask(read_sample_mask(sample, spec), spec)
    except PixelwiseError as exc:
        if str(sample.mask) in str(exc):
            raise
        raise PixelwiseError(f"{sample.mask}: {exc}") from None
    if bad:
        vals = ", ".join(f"{v} ({n} px)" for v, n in bad.items())
        raise PixelwiseError(f"{sample.where}: mask values outside the declared classes: {vals}")
    if labels.shape != image.shape[:2]:
        raise PixelwiseError(
            f"{sample.where}: mask size {labels.shape[1]}x{labels.shape[0]} != image size "
            f"{image.shape[1]}x{image.shape[0]} ({sample.image.name})"
        )
    return image, labels


def load_roi(sample: Sample, size: tuple[int, int]) -> np.ndarray | None:
    """A sample's region of interest as H×W uint8 (1 inside: a nonzero pixel, 0 outside), or
    ``None`` without one; raise if its size is not the image's ``size`` (height, width)."""
    if sample.roi is None:
        return None
    raw = read_mask(sample.roi)
    inside = (raw != 0).any(axis=2) if raw.ndim == 3 else raw != 0
    if inside.shape != tuple(size):
        raise PixelwiseError(
            f"{sample.roi}: roi size {inside.shape[1]}x{inside.shape[0]} != image size "
            f"{size[1]}x{size[0]} ({sample.image.name})"
        )
    return inside.astype(np.uint8)


class SegmentationDataset(Dataset):
    """Items are dicts: ``image`` (C×H×W float32, normalised), ``mask`` (H×W int64, 255 = ignore),
    ``index`` and ``path``; pixels outside a sample's region of interest (``Sample.roi``) are 255 in
    ``mask``, after the joint transforms moved the ROI with the mask. With ``raw_images``, also ``raw``: the image as read (H×W×C uint8), for
    post-processing that needs its pixels (the dense CRF).

    Random transforms are seeded from ``(seed, epoch, index)``: the same sample in the same epoch gets the
    same augmentation whatever the number of workers, which makes resumed runs continue exactly. An
    item is asked for by ``index`` (in the epoch of :meth:`set_epoch`) or by ``(epoch, index)``, which
    reaches DataLoader workers that outlive an epoch (persistent workers) with the right epoch.

    Args:
        spec: the dataset definition.
        split: split name.
        transform: an albumentations ``Compose`` (must include normalisation).
        seed: base seed for augmentation.
        raw_images: add ``raw`` to each item; the transform must keep the image's size (evaluation).
    """

    def __init__(
        self,
        spec: DatasetSpec,
        split: str,
        transform: A.Compose,
        *,
        seed: int = 0,
        raw_images: bool = False,
    ) -> None:
        samples, problems = resolve_split(spec, split)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise PixelwiseError(problems[0] + more)
        self.spec = spec
        self.split = split
        self.samples = samples
        self.transform = transform
        self.seed = seed
        self.raw_images = raw_images
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        sample = self.samples[index]
        image, mask = load_pair(sample, self.spec)
        if mask is None:
            mask = np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        roi = load_roi(sample, image.shape[:2])
        self.transform.set_random_seed((self.seed * 1_000_003 + epoch * 10_007 + index) % (2**32))
        # the ROI is one more mask: every geometric transform moves it with the labels
        out = self.transform(image=image, mask=mask, **({} if roi is None else {"masks": [roi]}))
        labels = np.array(out["mask"], dtype=np.int64)
        if roi is not None:
            labels[np.asarray(out["masks"][0]) == 0] = IGNORE_INDEX
        item = {
            "image": to_tensor(out["image"]),
            "mask": torch.from_numpy(labels),
            "index": index,
            "path": str(sample.image),
        }
        if self.raw_images:
            if out["image"].shape[:2] != image.shape[:2]:
                raise PixelwiseError(
                    f"{sample.image}: raw_images needs a transform that keeps the image size "
                    f"({image.shape[1]}x{image.shape[0]} became "
                    f"{out['image'].shape[1]}x{out['image'].shape[0]})"
                )
            item["raw"] = torch.from_numpy(image)
        return item


class SameSizeBatchSampler(Sampler[list[int]]):
    """Batches of images that share a size (read from headers), so evaluation needs no padding and
    its scores cannot depend on batch size."""

    def __init__(self, samples: list[Sample], batch_size: int) -> None:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            groups[image_size(s.image)].append(i)
        self.batches = [
            idx[j : j + batch_size]
            for idx in groups.values()
            for j in range(0, len(idx), batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
