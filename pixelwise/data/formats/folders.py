"""Plain image/mask folders (the default) and CamVid (SegNet's 360×480 release)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import DatasetFormat, register_format

__all__ = ["CAMVID_CLASSES"]

register_format(
    DatasetFormat(
        name="folders",
        description="paired image and mask folders matched by stem, or list files of 'image mask'",
    )
)

CAMVID_CLASSES: list[tuple[str, tuple[int, int, int]]] = [
    ("sky", (128, 128, 128)),
    ("building", (128, 0, 0)),
    ("pole", (192, 192, 128)),
    ("road", (128, 64, 128)),
    ("sidewalk", (60, 40, 222)),
    ("tree", (128, 128, 0)),
    ("sign", (192, 128, 128)),
    ("fence", (64, 64, 128)),
    ("car", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)),
    ("bicyclist", (0, 128, 192)),
]


def _camvid_defaults(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for name in ("train", "val", "test"):
        if (root / f"{name}.txt").is_file():
            splits[name] = {"list": f"{name}.txt"}
        elif (root / name).is_dir() and (root / f"{name}annot").is_dir():
            splits[name] = {"images": name, "masks": f"{name}annot"}
    if "train" in splits and "val" in splits and "list" in splits["train"]:
        splits["trainval"] = {"list": ["train.txt", "val.txt"]}
    return {
        "name": "camvid",
        "image_channels": 3,
        "classes": [{"name": n, "color": list(c)} for n, c in CAMVID_CLASSES],
        "mask": {"encoding": "index", "ignore_index": 11},
        "splits": splits,
    }


def _camvid_detect(root: Path) -> bool:
    return (root / "trainannot").is_dir() and (root / "train").is_dir()


register_format(
    DatasetFormat(
        name="camvid",
        description="CamVid, SegNet's release: train/ + trainannot/ (…), 11 classes, 11 = void",
        defaults=_camvid_defaults,
        detect=_camvid_detect,
    )
)
