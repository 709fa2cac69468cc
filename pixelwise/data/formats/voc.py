"""Pascal VOC 2012 segmentation: JPEG images, palette-PNG class masks, 255 = boundary/ignore.

Layout (``root`` is ``VOCdevkit/VOC2012``)::

    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png             # palette PNG: pixel = palette index = class, 255 = void
    ImageSets/Segmentation/{train,val,trainval}.txt   # one id per line

The palette *indices* are the labels (the colours are only for display). Options: ``images`` and
``masks`` name other folders (e.g. ``SegmentationClassAug`` for the SBD-augmented set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import IMAGE_EXTENSIONS
from . import DatasetFormat, register_format
from ._common import keep_stems, merged_options

__all__ = ["VOC_CLASSES", "voc_colormap"]

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip

_OPTIONS = {"images": "JPEGImages", "masks": "SegmentationClass"}


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """VOC's display palette: the bits of a class index spread over the high bits of R, G and B."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def _defaults(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    merged_options("voc", _OPTIONS, options, str(root))
    sets = root / "ImageSets" / "Segmentation"
    splits: dict[str, Any] = {}
    if sets.is_dir():
        for f in sorted(sets.glob("*.txt")):
            splits[f.stem] = {"list": f"ImageSets/Segmentation/{f.name}"}
    if not splits:
        opts = {**_OPTIONS, **options}
        splits["all"] = {"images": opts["images"], "masks": opts["masks"]}
    colors = voc_colormap(len(VOC_CLASSES))
    return {
        "name": "voc",
        "image_channels": 3,
        "classes": [
            {"name": n, "color": list(c)} for n, c in zip(VOC_CLASSES, colors, strict=True)
        ],
        "mask": {"encoding": "index", "ignore_index": 255},
        "splits": splits,
    }


def _find(folder: Path, stem: str, preferred: str) -> Path:
    p = folder / f"{stem}{preferred}"
    if p.exists():
        return p
    for ext in IMAGE_EXTENSIONS:
        q = folder / f"{stem}{ext}"
        if q.exists():
            return q
    return p  # missing: reported when read


def _resolve(spec, name, split):  # noqa: ANN001, ANN202 - see DatasetFormat.resolve
    from ..pairing import list_entries
    from ..spec import Sample, resolve_split

    if split.list_file is None:  # paired folders: the generic rules
        tmp = spec.model_copy(update={"format": "folders", "splits": {name: split}})
        return resolve_split(tmp, name)
    opts = merged_options("voc", _OPTIONS, spec.options, str(spec.source))
    images, masks = spec.root / opts["images"], spec.root / opts["masks"]
    samples: list[Sample] = []
    problems: list[str] = []
    lists = [split.list_file] if isinstance(split.list_file, str) else split.list_file
    for rel in lists:
        list_file = spec.root / rel
        if not list_file.is_file():
            problems.append(f"{list_file}: split list file not found (split {name!r})")
            continue
        for lineno, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
            fields = list_entries(line, spec.root)
            if not fields:
                continue
            if len(fields) == 2:  # "image mask" lines, as in the generic list files
                samples.append(Sample(spec.root / fields[0], spec.root / fields[1]))
            elif len(fields) == 1:
                stem = fields[0]
                samples.append(Sample(_find(images, stem, ".jpg"), _find(masks, stem, ".png")))
            else:
                problems.append(f"{list_file}:{lineno}: expected an image id, got {line!r}")
    return keep_stems(samples, split, name, problems), problems


def _detect(root: Path) -> bool:
    return (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir()


register_format(
    DatasetFormat(
        name="voc",
        description="Pascal VOC: JPEGImages/ + SegmentationClass/ palette PNGs, 21 classes, 255 = void",
        defaults=_defaults,
        detect=_detect,
        resolve=_resolve,
        options=dict(_OPTIONS),
        folder_rules=True,
    )
)
