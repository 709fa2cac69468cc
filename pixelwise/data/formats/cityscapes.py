"""Cityscapes: ``*_labelIds.png`` masks mapped to the 19 evaluation (train) classes.

Layout::

    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Each of the 19 train classes has one label id (road = 7, ..., bicycle = 33); every other id of the
official table (0–6, 9, 10, 14–16, 18, 29, 30) and 255 are unlabelled. Any other value is an error.
Option ``labels``: ``gtFine`` (default) or ``gtCoarse``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import DatasetFormat, register_format
from ._common import keep_stems, merged_options

__all__ = ["CITYSCAPES_CLASSES"]

# (train class, label id, colour) of the official label table (cityscapesscripts' labels.py)
CITYSCAPES_CLASSES: list[tuple[str, int, tuple[int, int, int]]] = [
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
]
_IMAGE_SUFFIX = "_leftImg8bit"
_OPTIONS = {"labels": "gtFine"}


def _defaults(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    opts = merged_options("cityscapes", _OPTIONS, options, str(root))
    used = {lid for _, lid, _ in CITYSCAPES_CLASSES}
    splits = {
        d.name: {"images": f"leftImg8bit/{d.name}", "masks": f"{opts['labels']}/{d.name}"}
        for d in sorted((root / "leftImg8bit").glob("*"))
        if d.is_dir() and (root / opts["labels"] / d.name).is_dir()
    }
    return {
        "name": "cityscapes",
        "image_channels": 3,
        "classes": [
            {"name": n, "color": list(c), "mask_value": lid} for n, lid, c in CITYSCAPES_CLASSES
        ],
        "mask": {
            "encoding": "value_map",
            "ignore_index": 255,
            "ignore_values": [v for v in range(34) if v not in used],
        },
        "splits": splits,
    }


def _resolve(spec, name, split):  # noqa: ANN001, ANN202 - see DatasetFormat.resolve
    from ..spec import Sample, resolve_split

    if split.images is None or split.masks is None:
        tmp = spec.model_copy(update={"format": "folders", "splits": {name: split}})
        return resolve_split(tmp, name)
    opts = merged_options("cityscapes", _OPTIONS, spec.options, str(spec.source))
    images, masks = spec.root / split.images, spec.root / split.masks
    problems: list[str] = []
    if not images.is_dir():
        return [], [f"{images}: folder not found (split {name!r})"]
    samples = []
    for img in sorted(images.rglob(f"*{_IMAGE_SUFFIX}.png")):
        base = img.name[: -len(f"{_IMAGE_SUFFIX}.png")]
        mask = masks / img.parent.relative_to(images) / f"{base}_{opts['labels']}_labelIds.png"
        if not mask.exists():
            problems.append(f"{img}: no label file {mask}")
            continue
        samples.append(Sample(img, mask))
    return keep_stems(samples, split, name, problems), problems


def _detect(root: Path) -> bool:
    return (root / "leftImg8bit").is_dir() and (
        (root / "gtFine").is_dir() or (root / "gtCoarse").is_dir()
    )


register_format(
    DatasetFormat(
        name="cityscapes",
        description="Cityscapes: leftImg8bit/ + gtFine/*_labelIds.png → 19 train classes",
        defaults=_defaults,
        detect=_detect,
        resolve=_resolve,
        options=dict(_OPTIONS),
    )
)
