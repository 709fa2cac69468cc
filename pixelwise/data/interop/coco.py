"""COCO JSON with compressed-RLE masks, one annotation per class per image (COCO-Stuff's layout).

Export: ``images`` (``id`` from 1, ``file_name``, ``width``, ``height``), ``categories`` (``id`` =
class index + 1, ``name``, ``supercategory`` ``""`` and the class colour as an extra ``color``
field) and ``annotations`` whose ``segmentation`` is compressed RLE, with ``area`` (pixels),
``bbox`` (``[x, y, width, height]`` of the pixels, as pycocotools' ``toBbox``) and ``iscrowd`` 0 —
as COCO-Stuff writes its stuff annotations, and because crowd annotations are dropped by
COCO-Stuff's tools (``cocoSegmentationToSegmentationMap`` without ``include_crowd``) and by
detection loaders.

Import: polygons, compressed RLE and count-list RLE, painted largest ``area`` first (so smaller
regions stay on top where they overlap), as pixelwise's COCO dataset reader does; crowd annotations
take their category.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import PixelwiseError
from ..formats._common import fill_polygon
from ._base import (
    ExportClass,
    ExportImage,
    LabelFormat,
    LabelledImage,
    Region,
    image_size_of,
    read_json,
    register_label_format,
)
from .rle import coco_rle_decode, coco_rle_encode

__all__ = ["CocoFormat"]


def _rle_painter(seg: dict[str, Any], where: str):  # noqa: ANN202 - a Region.paint
    def paint(canvas: np.ndarray, value: int) -> None:
        canvas[coco_rle_decode(seg, where)] = value

    return paint


def _polygon_painter(polys: list[np.ndarray]):  # noqa: ANN202 - a Region.paint
    def paint(canvas: np.ndarray, value: int) -> None:
        for pts in polys:
            fill_polygon(canvas, pts, value)

    return paint


def _segmentation(seg: object, size: tuple[int, int], where: str):  # noqa: ANN202
    """The painter of one annotation's ``segmentation``, checked against the image size (w, h)."""
    w, h = size
    if isinstance(seg, dict):
        got = seg.get("size")
        if not (isinstance(got, list) and len(got) == 2 and list(got) == [h, w]):
            raise PixelwiseError(f"{where}: RLE size {got!r} is not the image's [{h}, {w}]")
        if not isinstance(seg.get("counts"), str | list):
            raise PixelwiseError(f"{where}: RLE counts must be a string or a list of integers")
        return _rle_painter(seg, where)
    if isinstance(seg, list):
        try:
            polys = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg]
        except (TypeError, ValueError):
            raise PixelwiseError(f"{where}: polygons must be lists of x, y numbers") from None
        return _polygon_painter(polys)
    raise PixelwiseError(f"{where}: segmentation is neither polygons nor RLE")


@register_label_format
class CocoFormat(LabelFormat):
    """COCO instances JSON, one compressed-RLE annotation per class per image."""

    name = "coco"
    title = "COCO JSON"
    suffix = ".json"

    def image_record(
        self, image: ExportImage, labels: np.ndarray | None, classes: Sequence[ExportClass]
    ) -> Any:
        entry = {
            "id": image.id,
            "file_name": image.name,
            "width": image.width,
            "height": image.height,
        }
        anns = []
        present = set(np.unique(labels).tolist()) if labels is not None else set()
        for c in classes:
            if c.index not in present:
                continue
            mask = labels == c.index
            area = int(mask.sum())
            if not area:
                continue
            rows = np.flatnonzero(mask.any(axis=1))
            cols = np.flatnonzero(mask.any(axis=0))
            x, y = int(cols[0]), int(rows[0])
            bbox = [x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1]
            anns.append(
                {
                    "image_id": image.id,
                    "category_id": c.id,
                    "segmentation": coco_rle_encode(mask),
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
        return entry, anns

    def document(self, records: list[Any], classes: Sequence[ExportClass], title: str) -> bytes:
        images, annotations = [], []
        for entry, anns in records:
            images.append(entry)
            for a in anns:
                annotations.append({"id": len(annotations) + 1, **a})
        doc = {
            "info": {"description": f"{title}: semantic labels exported by pixelwise"},
            "licenses": [],
            "images": images,
            "categories": [
                {"id": c.id, "name": c.name, "supercategory": "", "color": list(c.color)}
                for c in classes
            ],
            "annotations": annotations,
        }
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")

    def read(self, path: Path) -> list[LabelledImage]:
        data = read_json(path)
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ("images", "categories")
        ):
            hint = ""
            if isinstance(data, dict) and "data" in data:
                hint = " (this looks like a Label Studio task: give --from labelstudio)"
            raise PixelwiseError(f"{path}: a COCO JSON needs 'images' and 'categories' lists{hint}")
        anns = data.get("annotations", [])
        if not isinstance(anns, list):
            raise PixelwiseError(f"{path}: 'annotations' must be a list")
        try:
            names: dict[int, str] = {}
            for c in data["categories"]:
                cid = int(c["id"])
                if cid in names:
                    raise PixelwiseError(f"{path}: category id {cid} appears twice")
                names[cid] = str(c["name"])
            images: dict[int, dict[str, Any]] = {}
            for im in data["images"]:
                iid = int(im["id"])
                if iid in images:
                    raise PixelwiseError(f"{path}: image id {iid} appears twice")
                images[iid] = im
        except (KeyError, TypeError, ValueError) as exc:
            raise PixelwiseError(
                f"{path}: malformed COCO JSON (missing or bad field {exc})"
            ) from None
        out: dict[int, LabelledImage] = {}
        for iid, im in images.items():
            where = f"{path} [image {iid}]"
            w, h = image_size_of(im.get("width"), im.get("height"), where)
            name = im.get("file_name")
            if not isinstance(name, str) or not name:
                raise PixelwiseError(f"{where}: file_name missing")
            out[iid] = LabelledImage(name, w, h, where)
        found: dict[int, list[tuple[float, Region]]] = {iid: [] for iid in images}
        for k, a in enumerate(anns):
            if not isinstance(a, dict):
                raise PixelwiseError(f"{path}: annotation {k} is not an object")
            where = f"{path} [annotation {a.get('id', k)}]"
            iid, cid = a.get("image_id"), a.get("category_id")
            if iid not in images:
                raise PixelwiseError(f"{where}: image_id {iid!r} is not an image of the file")
            if cid not in names:
                raise PixelwiseError(f"{where}: category_id {cid!r} is not a category of the file")
            try:
                area = float(a.get("area", 0) or 0)
            except (TypeError, ValueError):
                raise PixelwiseError(f"{where}: area must be a number") from None
            im = out[iid]
            paint = _segmentation(a.get("segmentation"), (im.width, im.height), where)
            found[iid].append((area, Region(names[cid], where, paint)))
        for iid, regions in found.items():
            regions.sort(key=lambda r: -r[0])  # largest first; stable: file order among equals
            out[iid].regions.extend(r for _, r in regions)
        return list(out.values())

    def sniff(self, text: str) -> bool:
        return text.startswith("{")
