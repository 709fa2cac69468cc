"""Label Studio tasks JSON with brush (``brushlabels``) regions, one per class per image.

Export: a list of tasks ``{"data": {"image": URL}, "annotations": [{"result": [...]}]}``, each
result ``{"id", "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width",
"original_height", "image_rotation": 0, "value": {"format": "rle", "rle": [...], "brushlabels":
[name]}}`` with Label Studio's brush RLE (:func:`.rle.ls_rle_encode`). An image without a mask is a
task without annotations, ready to be labelled. The project's labeling config must name the same
tags: :func:`labelstudio_config` writes one.

Import: a JSON export ("JSON" in Label Studio's export dialog: a list of tasks). Each task's first
annotation that was not cancelled is read (predictions are not); a task without one is skipped.
``brushlabels`` results with ``format`` ``rle`` are painted in order, later over earlier; other
region types that cover an area (polygons, rectangles, ellipses) are refused, and results without
area (choices, text, keypoints, ...) skipped. Image names come from ``data.image``: the path of a
local-files URL (``?d=``) or of the URL, less the 8-hex-digit prefix Label Studio gives uploads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from ...errors import PixelwiseError
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
from .rle import ls_rle_decode, ls_rle_encode, ls_rle_values

__all__ = ["LabelStudioFormat", "labelstudio_config", "FROM_NAME", "TO_NAME"]

FROM_NAME = "tag"  # the BrushLabels tag of the labeling config (label-studio-converter's default)
TO_NAME = "image"  # the Image tag

_AREA_TYPES = ("polygonlabels", "rectanglelabels", "ellipselabels", "polygon", "rectangle")


def labelstudio_config(classes: Sequence[ExportClass]) -> str:
    """A Label Studio labeling config (XML) whose tags match the export: an ``Image`` named
    ``image`` reading ``$image`` and a ``BrushLabels`` named ``tag`` with one ``Label`` per class,
    coloured as the class."""
    labels = "\n".join(
        f"    <Label value={quoteattr(c.name)} background={quoteattr(c.hex_color)}/>"
        for c in classes
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n'
        f"{labels}\n"
        "  </BrushLabels>\n"
        "</View>\n"
    )


def _brush_painter(rle: list[int], size: tuple[int, int], where: str):  # noqa: ANN202
    def paint(canvas: np.ndarray, value: int) -> None:
        canvas[ls_rle_decode(rle, size[0], size[1], where)] = value

    return paint


def _annotation(task: dict[str, Any], where: str) -> dict[str, Any] | None:
    anns = task.get("annotations", [])
    if not isinstance(anns, list):
        raise PixelwiseError(f"{where}: 'annotations' must be a list")
    for a in anns:
        if not isinstance(a, dict):
            raise PixelwiseError(f"{where}: an annotation is not an object")
        if not a.get("was_cancelled"):
            return a
    return None


def _region(r: object, where: str) -> tuple[str, int, int, Region] | None:
    """One result as (label, width, height, region); ``None`` for a result without area."""
    if not isinstance(r, dict):
        raise PixelwiseError(f"{where}: a result is not an object")
    kind = str(r.get("type", "")).lower()
    if kind in _AREA_TYPES:
        raise PixelwiseError(f"{where}: {kind} results are not read; draw brush masks")
    if kind != "brushlabels":
        return None
    value = r.get("value")
    if not isinstance(value, dict):
        raise PixelwiseError(f"{where}: result has no value")
    if value.get("format") != "rle":
        raise PixelwiseError(f"{where}: brush format {value.get('format')!r}; expected 'rle'")
    names = value.get("brushlabels")
    if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
        raise PixelwiseError(f"{where}: brushlabels must name one label, got {names!r}")
    if r.get("image_rotation", 0):
        raise PixelwiseError(f"{where}: rotated images (image_rotation) are not read")
    w, h = image_size_of(r.get("original_width"), r.get("original_height"), where)
    rle = value.get("rle")
    if not (isinstance(rle, list) and all(isinstance(b, int) and 0 <= b < 256 for b in rle)):
        raise PixelwiseError(f"{where}: rle must be a list of integers 0..255")
    num = ls_rle_values(rle, where)
    if num != 4 * w * h:
        raise PixelwiseError(
            f"{where}: brush rle holds {num} values, a {w}x{h} RGBA image {4 * w * h}"
        )
    return names[0], w, h, Region(names[0], where, _brush_painter(rle, (w, h), where))


@register_label_format
class LabelStudioFormat(LabelFormat):
    """Label Studio tasks JSON with brush RLE regions."""

    name = "labelstudio"
    title = "Label Studio JSON"
    suffix = ".json"

    def image_record(
        self, image: ExportImage, labels: np.ndarray | None, classes: Sequence[ExportClass]
    ) -> Any:
        task: dict[str, Any] = {"data": {TO_NAME: image.url}}
        if labels is None:
            return task
        present = set(np.unique(labels).tolist())
        result = []
        for c in classes:
            if c.index not in present:
                continue
            result.append(
                {
                    "id": f"pw{image.id}_{c.index}",
                    "type": "brushlabels",
                    "from_name": FROM_NAME,
                    "to_name": TO_NAME,
                    "original_width": image.width,
                    "original_height": image.height,
                    "image_rotation": 0,
                    "value": {
                        "format": "rle",
                        "rle": ls_rle_encode(labels == c.index),
                        "brushlabels": [c.name],
                    },
                }
            )
        task["annotations"] = [{"result": result}]
        return task

    def document(self, records: list[Any], classes: Sequence[ExportClass], title: str) -> bytes:
        return json.dumps(records, separators=(",", ":")).encode("utf-8")

    def read(self, path: Path) -> list[LabelledImage]:
        data = read_json(path)
        if isinstance(data, dict):  # one task
            data = [data]
        if not isinstance(data, list):
            raise PixelwiseError(f"{path}: a Label Studio export is a list of tasks")
        out = []
        for k, task in enumerate(data):
            if not isinstance(task, dict):
                raise PixelwiseError(f"{path} [task {k}]: not an object")
            where = f"{path} [task {task.get('id', k)}]"
            data = task.get("data")
            image = data.get(TO_NAME) if isinstance(data, dict) else None
            if not isinstance(image, str) or not image:
                raise PixelwiseError(f"{where}: data.{TO_NAME} (the image URL) missing")
            ann = _annotation(task, where)
            if ann is None:
                continue
            results = ann.get("result", [])
            if not isinstance(results, list):
                raise PixelwiseError(f"{where}: 'result' must be a list")
            regions, size = [], None
            for j, r in enumerate(results):
                found = _region(r, f"{where} result {j}")
                if found is None:
                    continue
                _, w, h, region = found
                if size is not None and size != (w, h):
                    raise PixelwiseError(
                        f"{region.where}: original size {w}x{h}, other results {size[0]}x{size[1]}"
                    )
                size = (w, h)
                regions.append(region)
            if size is None:  # no brush: the size is the dataset image's
                size = (0, 0)
            out.append(LabelledImage(image, size[0], size[1], where, regions))
        return out

    def sniff(self, text: str) -> bool:
        return text.startswith("[")
