"""Mask encodings: how a dataset's mask files hold its classes.

A dataset YAML names one with ``mask.encoding``; :func:`get_encoding` (or ``spec.mask.codec``) turns
the name into the object that does the work, so no other code asks which encoding it is:

* ``decode(raw, spec)``: a raw mask array → class indices (``IGNORE_INDEX`` for unlabelled pixels)
  and the undeclared values found;
* ``encode(labels, spec)``: class indices → the array to write in this encoding (checked to read
  back as the same labels);
* ``check(spec)``: what the spec must declare for it (a ``mask_value`` per class, a colour, ...);
* ``declared(spec)`` / ``describe(spec)``: the raw values and their meaning, and the line
  ``pixelwise data inspect`` prints of them;
* ``reads_rgb``: whether the mask reader keeps colours (otherwise palette PNGs give their indices).

Shipped: ``index`` (value = class), ``value_map`` (each class's ``mask_value``), ``rgb`` (each
class's colour) and ``binary`` (a gray threshold, for lossy two-class masks). A new encoding is one
subclass of :class:`MaskEncoding` decorated with :func:`register_encoding` (docs/datasets.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np

from ..errors import PixelwiseError
from .classes import IGNORE_INDEX

if TYPE_CHECKING:
    from .spec import DatasetSpec

__all__ = [
    "MaskEncoding",
    "IndexEncoding",
    "ValueMapEncoding",
    "RgbEncoding",
    "BinaryEncoding",
    "register_encoding",
    "get_encoding",
    "list_encodings",
    "expected_encodings",
    "describe_values",
    "value_sort_key",
]

_MOST_DESCRIBED = 40  # declared values listed on the describe line

_E = TypeVar("_E", bound="type[MaskEncoding]")


def value_sort_key(value: str) -> tuple[int, object]:
    """Sort key of a raw-value label: integers by value, then the rest (``rgb(...)``, ``<128``)."""
    return (0, int(value)) if value.lstrip("-").isdigit() else (1, value)


def describe_values(declared: dict[str, str]) -> str:
    """The one line ``data inspect`` prints of the declared values (``{raw value: meaning}``)."""
    items = list(declared.items())
    text = ", ".join(f"{k}: {v}" for k, v in items[:_MOST_DESCRIBED])
    if len(items) > _MOST_DESCRIBED:
        text += f", ... ({len(items)} in all)"
    return f"declared mask values: {text}"


def _gray(raw: np.ndarray) -> np.ndarray | None:
    """A one-channel mask: a three-channel mask whose channels are equal folded to one; ``None`` for
    a colour mask."""
    if raw.ndim != 3:
        return raw
    if np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2]):
        return raw[..., 0]
    return None


def _colour_mask(raw: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """A colour mask under an encoding of gray values: every pixel unlabelled, and flagged."""
    return np.full(raw.shape[:2], IGNORE_INDEX, np.uint8), {
        "<colour mask>": raw.shape[0] * raw.shape[1]
    }


def _labels(out: np.ndarray) -> np.ndarray:
    """A lookup result (``-1`` for undeclared values) as a uint8 label map."""
    return np.where(out < 0, IGNORE_INDEX, out).astype(np.uint8)


def _narrow(values: np.ndarray) -> np.ndarray:
    """Raw values in the smallest unsigned type a mask image holds (uint8, else uint16)."""
    if values.size and values.min() < 0:
        return values
    top = int(values.max(initial=0))
    return values.astype(np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int64)


class MaskEncoding:
    """How mask files hold classes; one instance per registered name (subclasses are stateless)."""

    name: ClassVar[str]
    reads_rgb: ClassVar[bool] = False  # read masks as H×W×3 colours (palette PNGs → colours)
    fields: ClassVar[tuple[str, ...]] = ()  # the ``mask:`` keys it reads besides ``encoding``

    def check(self, spec: DatasetSpec) -> None:
        """Raise ``ValueError`` when the spec lacks what this encoding needs (on loading a spec)."""

    def decode(self, raw: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, dict[str, int]]:
        """A raw mask → (H×W uint8 class indices, ``{undeclared value: pixel count}``).

        Undeclared pixels become ``IGNORE_INDEX``, like unlabelled ones.
        """
        raise NotImplementedError

    def _encode(self, labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
        raise NotImplementedError

    def _declared(self, spec: DatasetSpec) -> dict[str, str]:
        raise NotImplementedError

    def encode(self, labels: np.ndarray, spec: DatasetSpec, *, verify: bool = True) -> np.ndarray:
        """Class indices (H×W, ``IGNORE_INDEX`` for unlabelled) → the raw mask to write.

        Args:
            labels: the label map.
            spec: the dataset (classes, ``mask`` settings).
            verify: decode the result and check it reads back as ``labels``; leave it on unless
                :meth:`check_writable` passed for this spec.

        Raises:
            PixelwiseError: a label is not a class; or this spec cannot write a label so that it
                reads back (unlabelled pixels with no ignore value declared, two classes sharing
                a value, a binary mask holding unlabelled pixels, ...).
        """
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype.kind not in "ui":
            raise PixelwiseError(
                f"mask encoding {self.name!r}: labels must be an H×W integer array, "
                f"got shape {labels.shape} dtype {labels.dtype}"
            )
        n = spec.num_classes
        stray = (labels >= n) & (labels != IGNORE_INDEX) | (labels < 0)
        if stray.any():
            raise PixelwiseError(
                f"mask encoding {self.name!r}: label {int(labels[stray][0])} is not a class "
                f"(0..{n - 1}) nor unlabelled ({IGNORE_INDEX})"
            )
        raw = self._encode(labels.astype(np.int64), spec)
        if verify:
            self._check_reads_back(raw, labels, spec)
        return raw

    def _check_reads_back(self, raw: np.ndarray, labels: np.ndarray, spec: DatasetSpec) -> None:
        back, bad = self.decode(raw, spec)
        wrong = back != labels
        if bad:  # an undeclared value reads back as unlabelled, but is not a way to write it
            wrong |= back == IGNORE_INDEX
        if not wrong.any():
            return

        def label(k: int) -> str:
            if k != IGNORE_INDEX:
                return f"class {spec.class_names[k]!r}"
            return "an undeclared value" if bad else "unlabelled"

        k, got = int(labels[wrong][0]), int(back[wrong][0])
        what = "unlabelled pixels" if k == IGNORE_INDEX else label(k)
        raise PixelwiseError(
            f"mask encoding {self.name!r} cannot write {what}: they would read back as {label(got)}"
        )

    def check_writable(self, spec: DatasetSpec) -> None:
        """Raise :class:`PixelwiseError` unless every class and unlabelled pixels can be written."""
        self.encode(np.array([[*range(spec.num_classes), IGNORE_INDEX]], np.uint8), spec)

    def declared(self, spec: DatasetSpec) -> dict[str, str]:
        """Raw value → meaning (a class name or ``(ignored)``), as the spec declares it, sorted."""
        out = self._declared(spec)
        for v in spec.mask.ignore_values:
            out[str(v)] = "(ignored)"
        return dict(sorted(out.items(), key=lambda kv: value_sort_key(kv[0])))

    def describe(self, spec: DatasetSpec) -> str:
        """The one line ``pixelwise data inspect`` prints of the declared values."""
        return describe_values(self.declared(spec))


class _LookupEncoding(MaskEncoding):
    """Gray masks whose every raw value stands for a class (or for unlabelled) through a table."""

    fields = ("ignore_index", "ignore_values")

    def _values(self, spec: DatasetSpec) -> list[int | None]:
        """The raw value of each class."""
        raise NotImplementedError

    def check(self, spec: DatasetSpec) -> None:
        """A value meaning "unlabelled" must not be a class's: that class's pixels would all be
        ignored, and it would score IoU 0 inside every mean."""
        m = spec.mask
        ignored = [("mask.ignore_index", m.ignore_index)] if m.ignore_index is not None else []
        ignored += [("mask.ignore_values", v) for v in m.ignore_values]
        owner = {v: i for i, v in enumerate(self._values(spec)) if v is not None}
        for key, value in ignored:
            if value in owner:
                k = owner[value]
                raise ValueError(
                    f"{key} {value} is also the mask value of class {spec.classes[k].name!r} "
                    f"(class {k}): its pixels would all be ignored; use a value no class has"
                )

    def _lut(self, spec: DatasetSpec, size: int) -> np.ndarray:
        """Value → class lookup table; -1 marks values that are not declared."""
        lut = np.full(size, -1, dtype=np.int16)
        for i, v in enumerate(self._values(spec)):
            if v is not None and 0 <= v < size:
                lut[v] = i
        ignored = [spec.mask.ignore_index] if spec.mask.ignore_index is not None else []
        for v in ignored + spec.mask.ignore_values:
            if 0 <= v < size:
                lut[v] = IGNORE_INDEX
        return lut

    def decode(self, raw: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, dict[str, int]]:
        gray = _gray(raw)
        if gray is None:
            return _colour_mask(raw)
        if gray.dtype.kind not in "ui":
            raise PixelwiseError(f"mask has non-integer values (dtype {gray.dtype})")
        size = 256 if gray.dtype == np.uint8 else int(gray.max(initial=0)) + 1
        if gray.min(initial=0) < 0:
            return np.full(gray.shape, IGNORE_INDEX, np.uint8), {
                "<negative>": int((gray < 0).sum())
            }
        out = self._lut(spec, max(size, 256))[gray]
        bad = {}
        if (out < 0).any():
            vals, counts = np.unique(gray[out < 0], return_counts=True)
            bad = {str(int(v)): int(c) for v, c in zip(vals, counts, strict=True)}
        return _labels(out), bad

    def _encode(self, labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
        m = spec.mask
        table = np.zeros(IGNORE_INDEX + 1, np.int64)
        table[: spec.num_classes] = [-1 if v is None else v for v in self._values(spec)]
        ignored = (
            m.ignore_index if m.ignore_index is not None else next(iter(m.ignore_values), None)
        )
        table[IGNORE_INDEX] = IGNORE_INDEX if ignored is None else ignored
        return _narrow(table[labels])

    def _declared(self, spec: DatasetSpec) -> dict[str, str]:
        out = {str(v): spec.classes[i].name for i, v in enumerate(self._values(spec))}
        if spec.mask.ignore_index is not None:
            out[str(spec.mask.ignore_index)] = "(ignored)"
        return out


_REGISTRY: dict[str, MaskEncoding] = {}


def register_encoding(cls: _E) -> _E:
    """Class decorator: register one instance of ``cls`` under ``cls.name``.

    Raises:
        ValueError: the name is taken.
    """
    if cls.name in _REGISTRY:
        raise ValueError(f"mask encoding {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls()
    return cls


def list_encodings() -> list[str]:
    """The registered encoding names, in registration order."""
    return list(_REGISTRY)


def expected_encodings() -> str:
    """The registered names as a choice: ``'index', 'value_map', 'rgb' or 'binary'``."""
    names = [repr(n) for n in _REGISTRY]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def get_encoding(name: str) -> MaskEncoding:
    """The encoding registered under ``name``.

    Raises:
        PixelwiseError: no encoding has that name.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise PixelwiseError(
            f"unknown mask encoding {name!r}; expected {expected_encodings()}"
        ) from None


@register_encoding
class IndexEncoding(_LookupEncoding):
    """The pixel value is the class index (gray or palette PNG: palette indices, as in VOC)."""

    name = "index"

    def _values(self, spec: DatasetSpec) -> list[int | None]:
        return list(range(spec.num_classes))


@register_encoding
class ValueMapEncoding(_LookupEncoding):
    """Each class has its own raw value, its ``mask_value`` (EM masks: 0 → membrane, 255 → cell)."""

    name = "value_map"

    def check(self, spec: DatasetSpec) -> None:
        if any(c.mask_value is None for c in spec.classes):
            raise ValueError(f"mask encoding {self.name!r} needs a mask_value for every class")
        super().check(spec)

    def _values(self, spec: DatasetSpec) -> list[int | None]:
        return [c.mask_value for c in spec.classes]


def _code(rgb: np.ndarray) -> np.ndarray:
    """H×W×3 colours → one int32 per pixel (``r << 16 | g << 8 | b``)."""
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]


@register_encoding
class RgbEncoding(MaskEncoding):
    """Each class's colour, matched exactly; ``ignore_color`` marks unlabelled pixels."""

    name = "rgb"
    reads_rgb = True
    fields = ("ignore_color",)

    def check(self, spec: DatasetSpec) -> None:
        if any(c.color is None for c in spec.classes):
            raise ValueError(f"mask encoding {self.name!r} needs a color for every class")
        ignore = spec.mask.ignore_color
        if ignore is not None and tuple(ignore) in spec.colors:
            k = spec.colors.index(tuple(ignore))
            raise ValueError(
                f"mask.ignore_color {list(ignore)} is also the colour of class "
                f"{spec.classes[k].name!r} (class {k}): its pixels would all be ignored"
            )

    def decode(self, raw: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, dict[str, int]]:
        if raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=2)
        code = _code(raw)
        table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(spec.colors)}
        if spec.mask.ignore_color is not None:
            r, g, b = spec.mask.ignore_color
            table[(r << 16) | (g << 8) | b] = IGNORE_INDEX
        values, inverse = np.unique(code, return_inverse=True)
        mapped = np.array([table.get(int(v), -1) for v in values], dtype=np.int16)
        out = mapped[inverse.reshape(code.shape)]
        bad = {}
        for v in values[mapped < 0]:
            v = int(v)
            bad[f"rgb({v >> 16},{(v >> 8) & 255},{v & 255})"] = int((code == v).sum())
        return _labels(out), bad

    def _encode(self, labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
        lut = np.zeros((IGNORE_INDEX + 1, 3), np.uint8)
        lut[: spec.num_classes] = np.asarray(spec.colors, np.int64) & 255
        lut[IGNORE_INDEX] = np.asarray(spec.mask.ignore_color or (0, 0, 0), np.int64) & 255
        return lut[labels]

    def _declared(self, spec: DatasetSpec) -> dict[str, str]:
        out = {f"rgb({r},{g},{b})": spec.classes[i].name for i, (r, g, b) in enumerate(spec.colors)}
        if spec.mask.ignore_color is not None:
            out["rgb({},{},{})".format(*spec.mask.ignore_color)] = "(ignored)"
        return out


@register_encoding
class BinaryEncoding(MaskEncoding):
    """Two classes from lossy gray masks (JPEG): a value ``>= threshold`` is class 1."""

    name = "binary"
    fields = ("threshold",)

    def check(self, spec: DatasetSpec) -> None:
        if len(spec.classes) != 2:
            raise ValueError(f"mask encoding {self.name!r} needs exactly 2 classes")

    def decode(self, raw: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, dict[str, int]]:
        gray = _gray(raw)
        if gray is None:
            return _colour_mask(raw)
        scale = 1 if gray.dtype.itemsize == 1 else 257  # 16-bit masks: the threshold scaled
        return (gray >= spec.mask.threshold * scale).astype(np.uint8), {}

    def _encode(self, labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
        return np.where(labels == 1, 255, 0).astype(np.uint8)  # unlabelled cannot be written

    def _declared(self, spec: DatasetSpec) -> dict[str, str]:
        t = spec.mask.threshold
        return {f"<{t}": spec.classes[0].name, f">={t}": spec.classes[1].name}
