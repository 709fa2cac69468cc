"""The run-length encodings of the three label exchange formats, as pure functions of a binary mask.

* **COCO** (pycocotools' ``maskApi.c``): runs over the mask read column by column, alternating
  background/foreground and starting with background (a first run of 0 when pixel (0, 0) is set).
  The *compressed* form packs each run into 5-bit groups written as characters from ``'0'`` (48):
  bit 0x20 says another group follows, bit 0x10 of the last group is the sign, and every run after
  the third is stored as its difference from the run two before. Decoding is
  :func:`pixelwise.data.formats._common.decode_coco_rle`, shared with the COCO dataset reader.
* **CVAT** (``cvat-core``'s ``mask2Rle``; the ``rle`` attribute of a ``<mask>`` in "CVAT for
  images 1.1" XML): runs over the mask's bounding box read row by row, alternating and starting
  with background; the box is given apart as ``left``, ``top``, ``width``, ``height``.
* **Label Studio** (``label-studio-converter``'s ``brush.py``, after thi.ng's ``rle-pack``): the
  mask as an RGBA image flattened to bytes (a set pixel is ``255, 255, 255, 255``), bit-packed: a
  32-bit value count, a 5-bit word size minus one (8 bits), four 4-bit run-length field sizes minus
  one (3, 4, 8, 16), then records of ``1`` (a run) or ``0`` (literal values), a 2-bit field-size
  index, the run length minus one in that many bits, and the value(s); the bit string is padded with
  zeros to whole bytes, and the bytes are the list of integers Label Studio stores. Our encoder
  writes runs only (every run of an RGBA mask is at least 4 long); the decoder reads both kinds of
  record.

Each decoder checks that the runs cover the mask exactly before it allocates anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import PixelwiseError
from ..formats._common import decode_coco_rle

__all__ = [
    "coco_rle_encode",
    "coco_rle_decode",
    "cvat_rle_encode",
    "cvat_rle_decode",
    "ls_rle_encode",
    "ls_rle_decode",
    "ls_rle_values",
    "ALPHA_THRESHOLD",
]

ALPHA_THRESHOLD = 128
"""A Label Studio brush pixel is set when its alpha is at least this (strokes may be antialiased)."""

# Label Studio's brush RLE: word size and the four run-length field sizes its encoders use
_LS_WORD = 8
_LS_FIELDS = (3, 4, 8, 16)
_LS_HEADER_BITS = 32 + 5 + 4 * 4


def _runs(flat: np.ndarray) -> np.ndarray:
    """Run lengths of a 1-D boolean array, alternating False/True and starting with False."""
    if flat.size == 0:
        return np.zeros(1, np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], change, [flat.size])))
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(np.int64)


def _check_mask(mask: np.ndarray, who: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise PixelwiseError(f"{who} needs an H×W mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _compress(counts: Sequence[int]) -> str:
    """COCO's compressed counts string (pycocotools ``rleToString``)."""
    out = bytearray()
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: a negative difference ends at -1
            more = x != -1 if c & 0x10 else x != 0
            out.append((c | 0x20 if more else c) + 48)
    return out.decode("ascii")


def coco_rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed RLE of a binary H×W mask: ``{"size": [h, w], "counts": "<string>"}``, the
    value ``pycocotools.mask.encode(np.asfortranarray(mask))`` gives (with ``counts`` as text)."""
    mask = _check_mask(mask, "coco_rle_encode")
    counts = _runs(mask.reshape(-1, order="F")).tolist()
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": _compress(counts)}


def coco_rle_decode(rle: dict[str, Any], where: str = "RLE") -> np.ndarray:
    """The H×W bool mask of a COCO RLE (compressed string or list of counts).

    Raises:
        PixelwiseError: malformed, or the runs do not cover ``size`` exactly (``where`` names it).
    """
    return decode_coco_rle(rle, where)


def cvat_rle_encode(mask: np.ndarray) -> tuple[list[int], tuple[int, int, int, int]] | None:
    """CVAT's mask RLE: the runs over the mask's tight bounding box, row by row, starting with
    background, and the box as ``(left, top, width, height)``; ``None`` for an empty mask."""
    mask = _check_mask(mask, "cvat_rle_encode")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    box = mask[top : bottom + 1, left : right + 1]
    return _runs(box.reshape(-1)).tolist(), (left, top, right - left + 1, bottom - top + 1)


def cvat_rle_decode(runs: Sequence[int], width: int, height: int, where: str = "RLE") -> np.ndarray:
    """The ``height``×``width`` bool mask (the box only) of CVAT mask runs.

    Raises:
        PixelwiseError: a negative run, or the runs do not cover the box exactly.
    """
    counts = np.asarray(runs, dtype=np.int64)
    if width < 0 or height < 0 or (counts < 0).any() or int(counts.sum()) != width * height:
        raise PixelwiseError(
            f"{where}: rle covers {int(counts.sum())} pixels, its box {width}x{height}"
        )
    return np.repeat(np.arange(counts.size) % 2 == 1, counts).reshape(height, width)


def _ls_record(length: int, value: int) -> str:
    """One run record of Label Studio's brush RLE (a run of at most 2**16 values)."""
    for k, bits in enumerate(_LS_FIELDS):
        if length <= 1 << bits:
            return f"1{k:02b}{length - 1:0{bits}b}{value:08b}"
    raise AssertionError(length)  # pragma: no cover - callers split runs


def ls_rle_encode(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a binary H×W mask (``value.rle`` of a ``brushlabels`` result):
    the mask as RGBA bytes (a set pixel ``255`` in all four channels), bit-packed."""
    mask = _check_mask(mask, "ls_rle_encode")
    flat = mask.reshape(-1)
    num = 4 * flat.size
    if num >= 1 << 32:
        raise PixelwiseError(f"ls_rle_encode: {flat.size} pixels do not fit a brush RLE")
    parts = [f"{num:032b}", f"{_LS_WORD - 1:05b}", *(f"{b - 1:04b}" for b in _LS_FIELDS)]
    value = False  # the runs alternate, starting with background (a first run of 0 when set)
    longest = 1 << _LS_FIELDS[-1]
    for run in _runs(flat).tolist():
        length = 4 * run
        while length > 0:
            part = min(length, longest)
            parts.append(_ls_record(part, 255 if value else 0))
            length -= part
        value = not value
    bits = "".join(parts)
    bits += "0" * (-len(bits) % 8)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


def _ls_bits(rle: Sequence[int], where: str) -> str:
    try:
        data = bytes(rle)
    except (TypeError, ValueError):
        raise PixelwiseError(f"{where}: rle must be a list of integers 0..255") from None
    return bin(int.from_bytes(data, "big"))[2:].zfill(8 * len(data)) if data else ""


def ls_rle_values(rle: Sequence[int], where: str = "RLE") -> int:
    """The value count in a Label Studio brush RLE's header (4 per pixel), read without decoding.

    Raises:
        PixelwiseError: the header is missing or its word size is not 8 bits.
    """
    bits = _ls_bits(list(rle[:8]), where) if len(rle) >= 8 else ""
    if len(bits) < _LS_HEADER_BITS:
        raise PixelwiseError(f"{where}: brush rle too short for its header")
    word = int(bits[32:37], 2) + 1
    if word != _LS_WORD:
        raise PixelwiseError(f"{where}: brush rle word size {word} bits; Label Studio writes 8")
    return int(bits[:32], 2)


def ls_rle_decode(rle: Sequence[int], width: int, height: int, where: str = "RLE") -> np.ndarray:
    """The ``height``×``width`` bool mask of a Label Studio brush RLE: a pixel is set when its
    alpha (the fourth byte) is at least :data:`ALPHA_THRESHOLD`.

    Raises:
        PixelwiseError: malformed (truncated, runs past the end), a word size other than 8, or a
            value count that is not ``4 * width * height``.
    """
    num = ls_rle_values(rle, where)
    if num != 4 * width * height:
        raise PixelwiseError(
            f"{where}: brush rle holds {num} values, a {width}x{height} RGBA image {4 * width * height}"
        )
    bits = _ls_bits(rle, where)
    fields = [int(bits[37 + 4 * k : 41 + 4 * k], 2) + 1 for k in range(4)]
    pos, i = _LS_HEADER_BITS, 0
    lengths: list[int] = []
    values: list[int] = []
    end = len(bits)

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > end:
            raise PixelwiseError(f"{where}: brush rle is truncated")
        pos += n
        return int(bits[pos - n : pos], 2)

    while i < num:
        is_run = read(1)
        count = 1 + read(fields[read(2)])
        if i + count > num:
            raise PixelwiseError(f"{where}: brush rle runs past its {num} values")
        if is_run:
            lengths.append(count)
            values.append(read(_LS_WORD))
        else:
            for _ in range(count):
                lengths.append(1)
                values.append(read(_LS_WORD))
        i += count
    flat = np.repeat(np.asarray(values, np.uint8), np.asarray(lengths, np.int64))
    return (flat[3::4] >= ALPHA_THRESHOLD).reshape(height, width)
