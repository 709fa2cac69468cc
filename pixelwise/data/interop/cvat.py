"""CVAT for images 1.1 XML with ``<mask>`` shapes, one per class per image.

Export: ``<annotations>`` with ``<version>1.1</version>``, a ``<meta><task>`` holding the task's
``name``, ``size``, ``mode`` (``annotation``) and ``labels`` (each ``name``, ``color`` as
``#rrggbb``, ``type`` ``any``), then one ``<image id name width height>`` per image (ids from 0, as
CVAT numbers frames) holding one ``<mask label source="manual" occluded="0" rle left top width
height z_order="0">`` per class present: the runs of CVAT's mask RLE over the class's tight
bounding box, written ``"a, b, c"`` as CVAT writes them. CVAT's dataset importer needs the
``<meta>`` section; its annotation importer reads the shapes and matches images by name.

Import: ``polygon``, ``box``, ``ellipse`` and ``mask`` shapes of every ``<image>``, painted in
ascending ``z_order`` (file order among equals), as pixelwise's CVAT dataset reader does; shapes
that cover no area (``polyline``, ``points``, ``tag``, ``skeleton``) are skipped. Tracks (CVAT for
video), rotated boxes and ellipses, and masks outside their image are refused.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import PixelwiseError
from ..formats._common import fill_ellipse, fill_polygon
from ._base import (
    ExportClass,
    ExportImage,
    LabelFormat,
    LabelledImage,
    Region,
    image_size_of,
    parse_xml,
    register_label_format,
)
from .rle import cvat_rle_decode, cvat_rle_encode

__all__ = ["CvatFormat"]

_NO_AREA = ("polyline", "points", "tag", "skeleton", "attribute")


def _numbers(el: ET.Element, names: tuple[str, ...], where: str, kind: type = float) -> list:
    try:
        return [kind(el.get(n, "")) for n in names]
    except ValueError:
        raise PixelwiseError(f"{where}: <{el.tag}> needs numeric {', '.join(names)}") from None


def _unrotated(el: ET.Element, where: str) -> None:
    try:
        rotation = float(el.get("rotation", "0") or 0)
    except ValueError:
        raise PixelwiseError(f"{where}: rotation must be a number") from None
    if rotation % 360:
        raise PixelwiseError(f"{where}: rotated <{el.tag}> ({rotation:g}°) is not read")


def _mask_painter(el: ET.Element, size: tuple[int, int], where: str):  # noqa: ANN202
    left, top, w, h = _numbers(el, ("left", "top", "width", "height"), where, int)
    if left < 0 or top < 0 or w < 0 or h < 0 or left + w > size[0] or top + h > size[1]:
        raise PixelwiseError(
            f"{where}: mask box {w}x{h} at ({left}, {top}) is outside the {size[0]}x{size[1]} image"
        )
    text = el.get("rle") or ""

    def paint(canvas: np.ndarray, value: int) -> None:
        try:
            runs = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise PixelwiseError(f"{where}: rle must be comma-separated integers") from None
        bits = cvat_rle_decode(runs, w, h, where)
        canvas[top : top + h, left : left + w][bits] = value

    return paint


def _polygon_painter(points: list[tuple[float, float]]):  # noqa: ANN202
    def paint(canvas: np.ndarray, value: int) -> None:
        fill_polygon(canvas, points, value)

    return paint


def _ellipse_painter(cx: float, cy: float, rx: float, ry: float):  # noqa: ANN202
    def paint(canvas: np.ndarray, value: int) -> None:
        fill_ellipse(canvas, cx, cy, rx, ry, value)

    return paint


def _shape(el: ET.Element, size: tuple[int, int], where: str):  # noqa: ANN202
    """The painter of one shape element."""
    if el.tag == "mask":
        return _mask_painter(el, size, where)
    if el.tag == "polygon":
        try:
            pts = [tuple(float(v) for v in p.split(",")) for p in el.get("points", "").split(";")]
        except ValueError:
            raise PixelwiseError(f"{where}: points must be 'x,y;x,y;...'") from None
        if any(len(p) != 2 for p in pts):
            raise PixelwiseError(f"{where}: points must be 'x,y;x,y;...'")
        return _polygon_painter(pts)  # type: ignore[arg-type]
    if el.tag == "box":
        _unrotated(el, where)
        x0, y0, x1, y1 = _numbers(el, ("xtl", "ytl", "xbr", "ybr"), where)
        return _polygon_painter([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    _unrotated(el, where)  # ellipse
    cx, cy, rx, ry = _numbers(el, ("cx", "cy", "rx", "ry"), where)
    return _ellipse_painter(cx, cy, rx, ry)


@register_label_format
class CvatFormat(LabelFormat):
    """CVAT for images 1.1 XML, one ``<mask>`` per class per image."""

    name = "cvat"
    title = "CVAT for images 1.1 XML"
    suffix = ".xml"

    def image_record(
        self, image: ExportImage, labels: np.ndarray | None, classes: Sequence[ExportClass]
    ) -> Any:
        el = ET.Element(
            "image",
            {
                "id": str(image.id - 1),
                "name": image.name,
                "width": str(image.width),
                "height": str(image.height),
            },
        )
        present = set(np.unique(labels).tolist()) if labels is not None else set()
        for c in classes:
            if c.index not in present:
                continue
            found = cvat_rle_encode(labels == c.index)
            if found is None:  # pragma: no cover - present classes have pixels
                continue
            runs, (left, top, w, h) = found
            ET.SubElement(
                el,
                "mask",
                {
                    "label": c.name,
                    "source": "manual",
                    "occluded": "0",
                    "rle": ", ".join(str(r) for r in runs),
                    "left": str(left),
                    "top": str(top),
                    "width": str(w),
                    "height": str(h),
                    "z_order": "0",
                },
            )
        return el

    def document(self, records: list[Any], classes: Sequence[ExportClass], title: str) -> bytes:
        root = ET.Element("annotations")
        ET.SubElement(root, "version").text = "1.1"
        task = ET.SubElement(ET.SubElement(root, "meta"), "task")
        ET.SubElement(task, "name").text = title
        ET.SubElement(task, "size").text = str(len(records))
        ET.SubElement(task, "mode").text = "annotation"
        labels = ET.SubElement(task, "labels")
        for c in classes:
            label = ET.SubElement(labels, "label")
            ET.SubElement(label, "name").text = c.name
            ET.SubElement(label, "color").text = c.hex_color
            ET.SubElement(label, "type").text = "any"
            ET.SubElement(label, "attributes")
        root.extend(records)
        ET.indent(root)
        return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"

    def read(self, path: Path) -> list[LabelledImage]:
        root = parse_xml(path)
        if root.tag != "annotations":
            raise PixelwiseError(f"{path}: not a CVAT for images XML (root <{root.tag}>)")
        if root.find("track") is not None:
            raise PixelwiseError(
                f"{path}: holds <track> elements (CVAT for video); export the task as "
                "CVAT for images 1.1"
            )
        out = []
        for k, im in enumerate(root.iterfind("image")):
            where = f"{path} [image {im.get('id', k)}]"
            w, h = image_size_of(im.get("width"), im.get("height"), where)
            name = im.get("name")
            if not name:
                raise PixelwiseError(f"{where}: <image> without a name")
            shapes = [s for s in im if s.tag not in _NO_AREA]
            for s in shapes:
                if s.tag not in ("polygon", "box", "ellipse", "mask"):
                    raise PixelwiseError(f"{where}: <{s.tag}> shapes are not read")
            try:
                shapes.sort(key=lambda s: int(s.get("z_order", "0") or 0))  # stable
            except ValueError:
                raise PixelwiseError(f"{where}: z_order must be an integer") from None
            regions = []
            for j, s in enumerate(shapes):
                here = f"{where} <{s.tag}> {j}"
                label = s.get("label")
                if label is None:
                    raise PixelwiseError(f"{here}: no label")
                regions.append(Region(label, here, _shape(s, (w, h), here)))
            out.append(LabelledImage(name, w, h, where, regions))
        return out

    def sniff(self, text: str) -> bool:
        return text.startswith("<")
