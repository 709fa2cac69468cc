"""What the three label exchange formats share: the records passed between the export/import driver
(:mod:`.transfer`) and each format, the format registry, the bounds on what a file may ask for, and
a safe XML parser."""

from __future__ import annotations

import json
import pyexpat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from xml.etree.ElementTree import Element, TreeBuilder

import numpy as np

from ...errors import PixelwiseError, first_line

__all__ = [
    "MAX_IMAGE_PIXELS",
    "ExportClass",
    "ExportImage",
    "Region",
    "LabelledImage",
    "LabelFormat",
    "register_label_format",
    "get_label_format",
    "list_label_formats",
    "image_size_of",
    "check_labels",
    "read_json",
    "parse_xml",
]

MAX_IMAGE_PIXELS = 2**28
"""The largest image (width × height) a label file may declare: 268M pixels, e.g. 16384 × 16384.
A larger size is refused before anything is allocated."""

_F = TypeVar("_F", bound="type[LabelFormat]")


@dataclass(frozen=True)
class ExportClass:
    """A class as the exported file lists it: ``id`` is the class index + 1 (COCO and CVAT's
    importer refuse category id 0)."""

    index: int
    name: str
    color: tuple[int, int, int]

    @property
    def id(self) -> int:
        return self.index + 1

    @property
    def hex_color(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)


@dataclass(frozen=True)
class ExportImage:
    """One image of an export: ``id`` counts from 1 in export order; ``name`` is the file name the
    tools match (its path relative to the dataset root where file names collide); ``url`` is Label
    Studio's ``data.image``."""

    id: int
    name: str
    url: str
    width: int
    height: int


@dataclass(frozen=True)
class Region:
    """One labelled region of an imported image: ``paint(canvas, value)`` sets its pixels of the
    H×W ``canvas`` to ``value`` (raising :class:`PixelwiseError` naming ``where`` when its data is
    malformed, e.g. RLE runs that do not cover the mask)."""

    label: str
    where: str
    paint: Callable[[np.ndarray, int], None]


@dataclass(frozen=True)
class LabelledImage:
    """One image of an imported file: its name as the file gives it (a path or URL), size (0 × 0:
    the file does not say, e.g. a Label Studio task without brush results), and regions in painting
    order (later over earlier)."""

    name: str
    width: int
    height: int
    where: str  # the file and the item inside it, for messages
    regions: list[Region] = field(default_factory=list)


class LabelFormat:
    """One exchange format: writes an export, reads a file back. One instance per registered name.

    Export runs in two steps so that no label map outlives its image: :meth:`image_record` turns
    one image's labels into the format's record (called from worker threads), and
    :meth:`document` assembles the records into the file's bytes.
    """

    name: ClassVar[str]
    title: ClassVar[str]  # the name the tool gives it, for messages
    suffix: ClassVar[str]  # the file suffix it is usually saved with

    def image_record(
        self, image: ExportImage, labels: np.ndarray | None, classes: Sequence[ExportClass]
    ) -> Any:
        """One image's record; ``labels`` is H×W class indices (255: unlabelled), ``None`` for an
        image without a mask; ``classes`` are the classes exported (skipped ones are not)."""
        raise NotImplementedError

    def document(self, records: list[Any], classes: Sequence[ExportClass], title: str) -> bytes:
        """The file's bytes: ``records`` in image order; ``title`` names the dataset."""
        raise NotImplementedError

    def read(self, path: Path) -> list[LabelledImage]:
        """The images of a file, validated: sizes within :data:`MAX_IMAGE_PIXELS`, every region's
        size within its image. Region data (RLE runs) is decoded when painted.

        Raises:
            PixelwiseError: the file is unreadable or malformed (one line naming it and why).
        """
        raise NotImplementedError

    def sniff(self, text: str) -> bool:
        """Whether a file starting with ``text`` (leading white space removed) is this format."""
        raise NotImplementedError


_REGISTRY: dict[str, LabelFormat] = {}


def register_label_format(cls: _F) -> _F:
    """Class decorator: register one instance under ``cls.name``; a duplicate name is an error."""
    if cls.name in _REGISTRY:
        raise ValueError(f"label format {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls()
    return cls


def list_label_formats() -> list[str]:
    """The registered exchange formats (``coco``, ``cvat``, ``labelstudio``)."""
    return list(_REGISTRY)


def get_label_format(name: str) -> LabelFormat:
    """The format registered under ``name``.

    Raises:
        PixelwiseError: no format has that name.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise PixelwiseError(
            f"unknown label format {name!r}; expected {', '.join(_REGISTRY)}"
        ) from None


def image_size_of(width: object, height: object, where: str) -> tuple[int, int]:
    """``(width, height)`` as positive integers whose product is at most :data:`MAX_IMAGE_PIXELS`.

    Raises:
        PixelwiseError: not integers, not positive, or too large (``where`` names the item).
    """
    try:
        w, h = int(str(width)), int(str(height))
    except (TypeError, ValueError):
        raise PixelwiseError(
            f"{where}: width/height must be integers, got {width!r}, {height!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise PixelwiseError(f"{where}: image size {w}x{h} is empty")
    if w * h > MAX_IMAGE_PIXELS:
        raise PixelwiseError(
            f"{where}: image size {w}x{h} is over the {MAX_IMAGE_PIXELS:,}-pixel limit"
        )
    return w, h


def check_labels(images: Sequence[LabelledImage], known: Sequence[str], path: Path) -> None:
    """Raise unless every region's label is one of ``known`` (the dataset's class names).

    Raises:
        PixelwiseError: ``path: label 'x' (in <item>) is not a class of the dataset (...)``.
    """
    names = set(known)
    for im in images:
        for r in im.regions:
            if r.label not in names:
                shown = ", ".join(repr(n) for n in list(known)[:12])
                more = ", ..." if len(known) > 12 else ""
                raise PixelwiseError(
                    f"{r.where}: label {r.label!r} is not a class of the dataset ({shown}{more})"
                )


def read_json(path: Path) -> Any:
    """A JSON file's value.

    Raises:
        PixelwiseError: unreadable, not UTF-8 or not JSON (one line naming the file).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PixelwiseError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PixelwiseError(f"{path}: is a folder, not a label file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PixelwiseError(f"{path}: not a readable JSON file ({first_line(exc)})") from None


class _Refused(Exception):
    """A document type declaration: refused."""


def parse_xml(path: Path) -> Element:
    """Parse an XML file into an ElementTree element, refusing any document type declaration.

    Entities can only be declared inside a DTD, so refusing DTDs refuses entity expansion (the
    "billion laughs"), external entities and DTD retrieval, as defusedxml's ``forbid_dtd`` does;
    CVAT never writes one. Built on ``pyexpat`` directly, with no dependency.

    Raises:
        PixelwiseError: unreadable, not well-formed, or holding a ``<!DOCTYPE``.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PixelwiseError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PixelwiseError(f"{path}: is a folder, not a label file") from None
    except OSError as exc:
        raise PixelwiseError(f"{path}: cannot read ({exc.strerror})") from None
    builder = TreeBuilder()
    parser = pyexpat.ParserCreate()
    parser.buffer_text = True

    def refuse(*_: object) -> None:
        raise _Refused

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        return builder.close()
    except _Refused:
        raise PixelwiseError(
            f"{path}: XML with a document type declaration (<!DOCTYPE>) is refused"
        ) from None
    except pyexpat.ExpatError as exc:
        raise PixelwiseError(f"{path}: not well-formed XML ({first_line(exc)})") from None
    except (AssertionError, IndexError):  # TreeBuilder: no root element
        raise PixelwiseError(f"{path}: not well-formed XML (no root element)") from None
