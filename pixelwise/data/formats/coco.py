"""COCO-style JSON (polygons or RLE) rendered to semantic masks.

Layout::

    annotations/instances_<split>.json   # or any <split>.json holding images/annotations/categories
    <split>/*.jpg   (or images/<split>/, or images/)

Classes: ``background`` (index 0, every pixel no annotation covers) and then the JSON's categories in
ascending id order. Annotations are painted largest area first, so smaller objects stay visible where
they overlap. Polygons are rasterised by pixel centres (pixel ``(r, c)`` is inside when the point
``(c + 0.5, r + 0.5)`` is); RLE (compressed strings or count lists) is decoded exactly. The renderer is
pixelwise's own (no pycocotools needed); on polygons it agrees with pycocotools except on pixels whose
centre lies within a fraction of a pixel of an edge.

Options: ``annotations`` (the folder of JSON files, default ``annotations``), ``crowd``: ``class``
(default: crowd regions take their category) or ``ignore`` (they become unlabelled).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import PixelwiseError
from ..classes import IGNORE_INDEX
from . import DatasetFormat, register_format
from ._common import decode_coco_rle, file_head, fill_polygon, keep_stems, merged_options

__all__ = ["render_coco"]

_OPTIONS = {"annotations": "annotations", "crowd": "class"}


@dataclass(frozen=True)
class _Coco:
    categories: list[tuple[int, str]]  # (id, name), ascending id
    images: dict[int, dict[str, Any]]
    anns: dict[int, list[dict[str, Any]]]


_lock = threading.Lock()


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> _Coco:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PixelwiseError(f"{path}: not a readable COCO JSON ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "categories")
    ):
        raise PixelwiseError(f"{path}: a COCO JSON needs 'images' and 'categories' lists")
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
        images = {int(im["id"]): im for im in data["images"]}
        anns: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
        for a in data.get("annotations", []):
            anns.setdefault(int(a["image_id"]), []).append(a)
    except (KeyError, TypeError, ValueError) as exc:
        raise PixelwiseError(f"{path}: malformed COCO JSON (missing or bad field {exc})") from None
    return _Coco(cats, images, anns)


def _load(path: Path) -> _Coco:
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise PixelwiseError(f"{path}: cannot read ({exc.strerror})") from None
    with _lock:
        return _load_cached(str(path), mtime)


def _json_files(root: Path, folder: str) -> dict[str, Path]:
    """Split name → annotation file (``instances_train2017.json`` gives ``train2017``)."""
    d = root / folder
    files = sorted(d.glob("*.json")) if d.is_dir() else sorted(root.glob("*.json"))
    out = {}
    for f in files:
        name = f.stem.removeprefix("instances_")
        out[name] = f
    return out


def _image_dir(root: Path, split: str) -> Path:
    for cand in (root / split, root / "images" / split, root / "images"):
        if cand.is_dir():
            return cand
    return root


def _defaults(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    opts = merged_options("coco", _OPTIONS, options, str(root))
    files = _json_files(root, opts["annotations"])
    if not files:
        raise PixelwiseError(f"{root}: no COCO JSON in {root / opts['annotations']}")
    first = _load(next(iter(files.values())))
    splits = {
        name: {
            "images": str(_image_dir(root, name).relative_to(root)),
            "masks": str(f.relative_to(root)),
        }
        for name, f in files.items()
    }
    return {
        "name": root.name,
        "image_channels": 3,
        "classes": [{"name": "background"}] + [{"name": n} for _, n in first.categories],
        "mask": {"encoding": "index", "ignore_index": IGNORE_INDEX},
        "splits": splits,
    }


def _resolve(spec, name, split):  # noqa: ANN001, ANN202 - see DatasetFormat.resolve
    from ..spec import Sample

    if split.images is None or split.masks is None:
        return [], [f"split {name!r}: a COCO split needs 'images' (folder) and 'masks' (JSON file)"]
    ann_file = spec.root / split.masks
    coco = _load(ann_file)
    images = spec.root / split.images
    samples, problems = [], []
    for image_id, im in sorted(coco.images.items()):
        path = images / str(im.get("file_name", ""))
        if not path.is_file():
            problems.append(f"{ann_file}: image {image_id} file {path} not found")
            continue
        samples.append(Sample(path, ann_file, index=image_id))
    return keep_stems(samples, split, name, problems), problems


def render_coco(
    coco_json: Path, image_id: int, class_of_category: dict[int, int], *, crowd: str = "class"
) -> np.ndarray:
    """The semantic mask (H×W uint8, 0 = background) of one image of a COCO JSON."""
    coco = _load(Path(coco_json))
    where = f"{coco_json} [image {image_id}]"
    if image_id not in coco.images:
        raise PixelwiseError(f"{where}: no such image id")
    im = coco.images[image_id]
    try:
        h, w = int(im["height"]), int(im["width"])
    except (KeyError, TypeError, ValueError):
        raise PixelwiseError(f"{where}: image entry lacks height/width") from None
    canvas = np.zeros((h, w), dtype=np.uint8)
    anns = sorted(coco.anns.get(image_id, []), key=lambda a: -float(a.get("area", 0) or 0))
    for a in anns:
        cat = a.get("category_id")
        if cat not in class_of_category:
            raise PixelwiseError(f"{where}: annotation {a.get('id')} has unknown category {cat!r}")
        value = class_of_category[cat]
        if a.get("iscrowd") and crowd == "ignore":
            value = IGNORE_INDEX
        seg = a.get("segmentation")
        if isinstance(seg, list):
            for poly in seg:
                fill_polygon(canvas, np.asarray(poly, dtype=np.float64).reshape(-1, 2), value)
        elif isinstance(seg, dict):
            bits = decode_coco_rle(seg, f"{where} annotation {a.get('id')}")
            if bits.shape != (h, w):
                raise PixelwiseError(
                    f"{where}: annotation {a.get('id')} RLE is {bits.shape[1]}x{bits.shape[0]}, "
                    f"the image {w}x{h}"
                )
            canvas[bits] = value
        elif seg is not None:
            raise PixelwiseError(f"{where}: annotation {a.get('id')} has no polygon or RLE")
    return canvas


def _read_mask(sample, spec) -> np.ndarray:  # noqa: ANN001 - see DatasetFormat.read_mask
    opts = merged_options("coco", _OPTIONS, spec.options, str(spec.source))
    if opts["crowd"] not in ("class", "ignore"):
        raise PixelwiseError(f"{spec.source}: option crowd must be 'class' or 'ignore'")
    coco = _load(sample.mask)
    names = {c.name: i for i, c in enumerate(spec.classes)}
    lookup = {}
    for cid, cname in coco.categories:
        if cname not in names:
            raise PixelwiseError(
                f"{sample.mask}: category {cname!r} (id {cid}) is not a class of the dataset"
            )
        lookup[cid] = names[cname]
    return render_coco(sample.mask, sample.index, lookup, crowd=opts["crowd"])


def _detect(root: Path) -> bool:
    d = root / "annotations"
    if not d.is_dir():
        return False
    for f in sorted(d.glob("*.json"))[:1]:
        head = file_head(f, 4096)
        # a LabelMe folder named annotations is not COCO
        return head is not None and '"shapes"' not in head
    return False


register_format(
    DatasetFormat(
        name="coco",
        description="COCO JSON polygons / RLE rendered to semantic masks (background + categories)",
        defaults=_defaults,
        detect=_detect,
        resolve=_resolve,
        read_mask=_read_mask,
        options=dict(_OPTIONS),
    )
)
