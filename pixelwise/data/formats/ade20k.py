"""ADE20K (the SceneParsing / ADEChallengeData2016 release): 150 classes, 0 = other (ignored).

Layout (``root`` is ``ADEChallengeData2016``)::

    images/{training,validation}/ADE_*.jpg
    annotations/{training,validation}/ADE_*.png   # 0 = other/unlabelled, 1..150 = classes

Mask value ``k`` (1..150) is class ``k - 1``; 0 is unlabelled (the "reduce zero label" convention).
Splits: ``train`` (training) and ``val`` (validation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import DatasetFormat, register_format
from ._common import merged_options

__all__ = ["ADE20K_CLASSES"]

# the 150 classes of the SceneParsing benchmark, in mask-value order (value 1 = wall)
ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
]  # fmt: skip

_SPLITS = {"train": "training", "val": "validation"}


def _defaults(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    merged_options("ade20k", {}, options, str(root))
    splits = {
        name: {"images": f"images/{sub}", "masks": f"annotations/{sub}"}
        for name, sub in _SPLITS.items()
        if (root / "images" / sub).is_dir()
    }
    return {
        "name": "ade20k",
        "image_channels": 3,
        "classes": [{"name": n, "mask_value": i + 1} for i, n in enumerate(ADE20K_CLASSES)],
        "mask": {"encoding": "value_map", "ignore_index": 0},
        "splits": splits,
    }


def _detect(root: Path) -> bool:
    return (root / "images" / "training").is_dir() and (root / "annotations" / "training").is_dir()


register_format(
    DatasetFormat(
        name="ade20k",
        description="ADE20K SceneParsing: images/ + annotations/ {training,validation}, 150 classes, 0 = other",
        defaults=_defaults,
        detect=_detect,
    )
)
