"""Polygon exports of annotation tools, rendered to semantic masks: LabelMe and CVAT.

**LabelMe**: one JSON per image (``<stem>.json`` beside the image, or in a ``masks`` folder) with
``shapes`` of type ``polygon``, ``rectangle`` or ``circle`` (``line``, ``linestrip`` and ``point`` cover
no area and are skipped). Shapes are painted in file order, later over earlier. The label
``__ignore__`` paints unlabelled pixels; uncovered pixels are class 0 (option ``unlabelled: ignore``
makes them unlabelled instead). Without a YAML the classes are ``background`` plus every label found,
sorted (a ``_background_`` label, labelme2voc's convention, is class 0).

**CVAT** ("CVAT for images 1.1" XML, ``annotations.xml`` beside an ``images/`` folder): ``polygon``,
``box`` and ``mask`` (CVAT's row-major RLE inside its box) shapes, painted in ascending ``z_order``
(file order among equals). Classes: ``background`` plus the task's labels in the XML's order.

Both rasterise polygons by pixel centres, as the COCO reader does.
"""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import PixelwiseError
from ..classes import IGNORE_INDEX
from ..io import IMAGE_EXTENSIONS
from . import DatasetFormat, register_format
from ._common import (
    class_lookup,
    file_head,
    fill_ellipse,
    fill_polygon,
    hashed_splits,
    images_in,
    keep_stems,
    merged_options,
)

__all__ = ["render_labelme", "render_cvat"]

_IGNORE_LABEL = "__ignore__"


def _check_unlabelled(spec, opts) -> int:  # noqa: ANN001
    if opts["unlabelled"] == "background":
        return 0
    if opts["unlabelled"] == "ignore":
        return IGNORE_INDEX
    raise PixelwiseError(f"{spec.source}: option unlabelled must be 'background' or 'ignore'")


def _label_value(table: dict[str, int], label: Any, where: str) -> int:
    if label not in table:
        raise PixelwiseError(
            f"{where}: label {label!r} is not a class of the dataset ({', '.join(list(table)[:8])}...)"
        )
    return table[label]


# ---------------------------------------------------------------------------- LabelMe

_LABELME_OPTIONS = {"unlabelled": "background"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PixelwiseError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PixelwiseError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise PixelwiseError(f"{path}: not a LabelMe file (no 'shapes' list)")
    return data


def render_labelme(path: Path, table: dict[str, int], background: int = 0) -> np.ndarray:
    """The semantic mask (H×W uint8) of one LabelMe JSON, labels mapped through ``table``."""
    data = _read_json(path)
    try:
        h, w = int(data["imageHeight"]), int(data["imageWidth"])
    except (KeyError, TypeError, ValueError):
        raise PixelwiseError(f"{path}: imageHeight/imageWidth missing") from None
    canvas = np.full((h, w), background, dtype=np.uint8)
    for k, shape in enumerate(data["shapes"]):
        where = f"{path} shape {k}"
        kind = shape.get("shape_type") or "polygon"
        if kind in ("line", "linestrip", "point", "points"):
            continue
        value = _label_value(table, shape.get("label"), where)
        try:
            pts = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
        except (KeyError, TypeError, ValueError):
            raise PixelwiseError(f"{where}: points must be a list of [x, y]") from None
        if kind == "polygon":
            fill_polygon(canvas, pts, value)
        elif kind == "rectangle" and len(pts) == 2:
            (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
            fill_polygon(canvas, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], value)
        elif kind == "circle" and len(pts) == 2:
            r = float(np.hypot(*(pts[1] - pts[0])))
            fill_ellipse(canvas, pts[0][0], pts[0][1], r, r, value)
        else:
            raise PixelwiseError(f"{where}: unsupported shape {kind!r} with {len(pts)} points")
    return canvas


def _labelme_defaults(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    merged_options("labelme", _LABELME_OPTIONS, options, str(root))
    masks = "masks" if (root / "masks").is_dir() else "."
    images = "images" if (root / "images").is_dir() else "."
    labels: set[str] = set()
    for f in sorted((root / masks).glob("*.json")):
        data = _read_json(f)
        labels.update(str(s.get("label")) for s in data["shapes"])
    labels.discard(_IGNORE_LABEL)
    first = "_background_" if "_background_" in labels else "background"
    labels.discard(first)
    stems = [p.stem for p in images_in(root / images, IMAGE_EXTENSIONS)]
    return {
        "name": root.name,
        "image_channels": 3,
        "classes": [{"name": first}] + [{"name": n} for n in sorted(labels)],
        "mask": {"encoding": "index", "ignore_index": IGNORE_INDEX},
        "splits": hashed_splits(stems, {"images": images, "masks": masks}),
    }


def _labelme_resolve(spec, name, split):  # noqa: ANN001, ANN202 - see DatasetFormat.resolve
    from ..spec import Sample

    if split.images is None:
        return [], [f"split {name!r}: a LabelMe split needs 'images' (and 'masks')"]
    images = images_in(spec.root / split.images, IMAGE_EXTENSIONS)
    masks = spec.root / (split.masks if split.masks is not None else split.images)
    samples, problems = [], []
    for img in images:
        js = masks / f"{img.stem}{split.mask_suffix}.json"
        if not js.is_file():
            problems.append(f"{img}: no LabelMe file {js.name} in {masks}")
            continue
        samples.append(Sample(img, js))
    return keep_stems(samples, split, name, problems), problems


def _labelme_read_mask(sample, spec) -> np.ndarray:  # noqa: ANN001
    opts = merged_options("labelme", _LABELME_OPTIONS, spec.options, str(spec.source))
    return render_labelme(sample.mask, class_lookup(spec), _check_unlabelled(spec, opts))


def _labelme_detect(root: Path) -> bool:
    for d in (root / "masks", root):
        for f in sorted(d.glob("*.json"))[:1] if d.is_dir() else []:
            return '"shapes"' in (file_head(f, 65536) or "")
    return False


register_format(
    DatasetFormat(
        name="labelme",
        description="LabelMe JSON per image: polygons / rectangles / circles rendered to masks",
        defaults=_labelme_defaults,
        detect=_labelme_detect,
        resolve=_labelme_resolve,
        read_mask=_labelme_read_mask,
        options=dict(_LABELME_OPTIONS),
    )
)

# ---------------------------------------------------------------------------- CVAT

_CVAT_OPTIONS = {"unlabelled": "background"}
_lock = threading.Lock()


@lru_cache(maxsize=8)
def _parse_cvat_cached(path: str, mtime: float) -> tuple[list[str], dict[int, ET.Element]]:
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as exc:
        raise PixelwiseError(f"{path}: not a readable CVAT XML ({exc})") from None
    root = tree.getroot()
    if root.tag != "annotations":
        raise PixelwiseError(f"{path}: not a CVAT for images XML (root <{root.tag}>)")
    labels = [e.text or "" for e in root.iterfind("./meta//labels/label/name")]
    images: dict[int, ET.Element] = {}
    for im in root.iterfind("image"):
        try:
            images[int(im.get("id", ""))] = im
        except ValueError:
            raise PixelwiseError(f"{path}: <image> without a numeric id") from None
    if not labels:  # no meta: the labels in order of first use
        seen: dict[str, None] = {}
        for im in images.values():
            for shape in im:
                seen.setdefault(shape.get("label", ""), None)
        labels = list(seen)
    return labels, images


def _parse_cvat(path: Path) -> tuple[list[str], dict[int, ET.Element]]:
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise PixelwiseError(f"{path}: cannot read ({exc.strerror})") from None
    with _lock:
        return _parse_cvat_cached(str(path), mtime)


def _floats(el: ET.Element, names: tuple[str, ...], where: str) -> list[float]:
    try:
        return [float(el.get(n, "")) for n in names]
    except ValueError:
        raise PixelwiseError(f"{where}: <{el.tag}> needs numeric {', '.join(names)}") from None


def _cvat_rle(el: ET.Element, canvas: np.ndarray, value: int, where: str) -> None:
    left, top, w, h = (int(v) for v in _floats(el, ("left", "top", "width", "height"), where))
    try:
        runs = [int(v) for v in (el.get("rle") or "").split(",") if v.strip()]
    except ValueError:
        raise PixelwiseError(f"{where}: <mask> rle must be comma-separated integers") from None
    if sum(runs) != w * h or any(r < 0 for r in runs):
        raise PixelwiseError(f"{where}: <mask> rle covers {sum(runs)} pixels, its box {w}x{h}")
    bits = np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape(h, w)
    region = canvas[top : top + h, left : left + w]
    region[bits[: region.shape[0], : region.shape[1]]] = value


def render_cvat(xml: Path, image_id: int, table: dict[str, int], background: int = 0) -> np.ndarray:
    """The semantic mask (H×W uint8) of one image of a CVAT for images XML."""
    _, images = _parse_cvat(Path(xml))
    where = f"{xml} [image {image_id}]"
    if image_id not in images:
        raise PixelwiseError(f"{where}: no such image id")
    im = images[image_id]
    w, h = (int(v) for v in _floats(im, ("width", "height"), where))
    canvas = np.full((h, w), background, dtype=np.uint8)
    shapes = [s for s in im if s.tag in ("polygon", "box", "mask")]
    shapes.sort(key=lambda s: int(s.get("z_order", "0") or 0))  # stable: file order among equals
    for k, s in enumerate(shapes):
        here = f"{where} <{s.tag}> {k}"
        value = _label_value(table, s.get("label"), here)
        if s.tag == "polygon":
            try:
                pts = [
                    tuple(float(v) for v in p.split(",")) for p in s.get("points", "").split(";")
                ]
            except ValueError:
                raise PixelwiseError(f"{here}: points must be 'x,y;x,y;...'") from None
            fill_polygon(canvas, pts, value)
        elif s.tag == "box":
            x0, y0, x1, y1 = _floats(s, ("xtl", "ytl", "xbr", "ybr"), here)
            fill_polygon(canvas, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], value)
        else:
            _cvat_rle(s, canvas, value, here)
    return canvas


def _cvat_xml(root: Path) -> Path | None:
    for cand in (root / "annotations.xml", *sorted(root.glob("*.xml"))):
        if cand.is_file():
            return cand
    return None


def _cvat_defaults(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    merged_options("cvat", _CVAT_OPTIONS, options, str(root))
    xml = _cvat_xml(root)
    if xml is None:
        raise PixelwiseError(f"{root}: no CVAT annotations.xml")
    labels, images = _parse_cvat(xml)
    folder = "images" if (root / "images").is_dir() else "."
    stems = [Path(im.get("name", "")).stem for im in images.values()]
    classes = ["background"] + [n for n in labels if n != "background"]
    return {
        "name": root.name,
        "image_channels": 3,
        "classes": [{"name": n} for n in classes],
        "mask": {"encoding": "index", "ignore_index": IGNORE_INDEX},
        "splits": hashed_splits(stems, {"images": folder, "masks": xml.name}),
    }


def _cvat_resolve(spec, name, split):  # noqa: ANN001, ANN202 - see DatasetFormat.resolve
    from ..spec import Sample

    if split.images is None or split.masks is None:
        return [], [f"split {name!r}: a CVAT split needs 'images' (folder) and 'masks' (XML file)"]
    xml = spec.root / split.masks
    _, images = _parse_cvat(xml)
    folder = spec.root / split.images
    samples, problems = [], []
    for image_id, im in sorted(images.items()):
        name_ = im.get("name", "")
        path = folder / name_
        if not path.is_file() and (folder / Path(name_).name).is_file():
            path = folder / Path(name_).name
        if not path.is_file():
            problems.append(f"{xml}: image {image_id} file {path} not found")
            continue
        samples.append(Sample(path, xml, index=image_id))
    return keep_stems(samples, split, name, problems), problems


def _cvat_read_mask(sample, spec) -> np.ndarray:  # noqa: ANN001
    opts = merged_options("cvat", _CVAT_OPTIONS, spec.options, str(spec.source))
    return render_cvat(sample.mask, sample.index, class_lookup(spec), _check_unlabelled(spec, opts))


def _cvat_detect(root: Path) -> bool:
    xml = root / "annotations.xml"
    return xml.is_file() and "<annotations" in (file_head(xml, 4096) or "")


register_format(
    DatasetFormat(
        name="cvat",
        description="CVAT for images 1.1 XML: polygons / boxes / masks rendered to masks",
        defaults=_cvat_defaults,
        detect=_cvat_detect,
        resolve=_cvat_resolve,
        read_mask=_cvat_read_mask,
        options=dict(_CVAT_OPTIONS),
    )
)
