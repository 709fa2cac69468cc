"""A corpus of hostile inputs, written by the tests themselves (no binary fixtures are committed).

:func:`hostile_images` writes every kind of image file users actually feed a segmentation tool —
broken, odd and merely unusual — and says for each whether pixelwise must accept it (and convert it)
or refuse it with one line naming the file. :func:`hostile_dataset` writes a dataset whose splits each
hold one kind of bad mask (or a symlink loop, or nothing at all), beside one clean split.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "Case",
    "png_claiming",
    "hostile_images",
    "hostile_dataset",
    "MASK_SPLITS",
    "CLASSES",
]

# the classes of the hostile dataset: index masks 0..2, 255 unlabelled; colours for RGB masks
CLASSES = [
    {"name": "bg", "color": [0, 0, 0]},
    {"name": "red", "color": [255, 0, 0]},
    {"name": "green", "color": [0, 255, 0]},
]


@dataclass(frozen=True)
class Case:
    """One hostile file: its path, whether it is valid, and for a valid image the size it must
    decode to (H, W) after EXIF orientation; for an invalid one, words its error must contain."""

    name: str
    path: Path
    valid: bool
    size: tuple[int, int] | None = None
    reason: str = ""


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 1×1 PNG whose header claims ``width × height`` pixels (a decompression bomb's header),
    with a correct header CRC so that only the size gives it away."""
    data = bytearray(_png_bytes(np.zeros((1, 1, 3), np.uint8)))
    struct.pack_into(">II", data, 16, width, height)  # IHDR data starts at byte 16
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _exif_rotated_jpeg(path: Path) -> None:
    """A 20×40 (H×W) JPEG stored sideways with orientation 6: it must come out 40×20."""
    im = Image.fromarray(_rng(1).integers(0, 256, (20, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(path, format="JPEG", exif=exif.tobytes())


def hostile_images(folder: Path) -> list[Case]:
    """Write the image corpus into ``folder`` (created); return one :class:`Case` per file.

    Valid (accepted and converted to 8-bit RGB): 16-bit grayscale PNG, RGBA PNG, CMYK JPEG,
    EXIF-rotated JPEG (orientation applied), 1×1, 1×10000 and 10000×1 images, a palette PNG, a
    name with spaces, a name that is not UTF-8. Invalid (one-line error naming the file): zero
    bytes, truncated PNG and JPEG, text named ``.png``, a PNG header claiming 50,000×50,000 pixels,
    a PNG with a corrupt chunk CRC, a folder named ``.png``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng()
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    cases: list[Case] = []

    def add(name: str, data: bytes, valid: bool, size=None, reason: str = "") -> None:  # noqa: ANN001
        p = folder / name
        p.write_bytes(data)
        cases.append(Case(name, p, valid, size, reason))

    # --- refused ---------------------------------------------------------------------------
    add("zero_bytes.png", b"", False, reason="")
    full_png = _png_bytes(rgb)
    add("truncated.png", full_png[: len(full_png) // 2], False)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    add("truncated.jpg", buf.getvalue()[: len(buf.getvalue()) // 2], False)
    add("text_named.png", b"this is a text file, not an image\n" * 4, False)
    add("bomb.png", png_claiming(50_000, 50_000), False, reason="")
    add(os.fsdecode(b"broken_\xff name.png"), b"\x89PNG\r\n\x1a\n broken", False)
    bad_crc = bytearray(full_png)
    bad_crc[40] ^= 0xFF  # inside the IDAT data: zlib or CRC failure
    add("corrupt_idat.png", bytes(bad_crc), False)
    (folder / "folder_named.png").mkdir(exist_ok=True)
    cases.append(Case("folder_named.png", folder / "folder_named.png", False))

    # --- accepted, converted -----------------------------------------------------------------
    wide = (rng.integers(0, 65536, (24, 32), dtype=np.uint16)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, format="PNG")
    add("gray16.png", buf.getvalue(), True, (24, 32))
    rgba = np.dstack([rgb, rng.integers(0, 256, (24, 32), dtype=np.uint8)])
    add("rgba.png", _png_bytes(rgba, "RGBA"), True, (24, 32))
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    add("cmyk.jpg", buf.getvalue(), True, (24, 32))
    _exif_rotated_jpeg(folder / "exif_rot6.jpg")
    cases.append(Case("exif_rot6.jpg", folder / "exif_rot6.jpg", True, (40, 20)))
    add("one_pixel.png", _png_bytes(rgb[:1, :1]), True, (1, 1))
    add(
        "strip_1x10000.png",
        _png_bytes(rng.integers(0, 256, (1, 10000, 3), np.uint8)),
        True,
        (1, 10000),
    )
    add(
        "strip_10000x1.png",
        _png_bytes(rng.integers(0, 256, (10000, 1, 3), np.uint8)),
        True,
        (10000, 1),
    )
    pal = Image.fromarray(rng.integers(0, 4, (24, 32), dtype=np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    add("palette.png", buf.getvalue(), True, (24, 32))
    add("name with spaces.png", full_png, True, (24, 32))
    bad_name = os.fsdecode(b"latin1_\xe9t\xe9.png")  # not UTF-8: a surrogate-escaped str
    add(bad_name, full_png, True, (24, 32))
    return cases


# splits of :func:`hostile_dataset` whose masks are wrong, and the words their error must hold
MASK_SPLITS = {
    "out_of_range": "declared class",
    "wrong_size": "mask size",
    "zero_mask": "empty file (0 bytes)",
    "bad_image": "not a readable image",
    "empty": "no images",
}


def hostile_dataset(root: Path, *, rgb_masks: bool = False) -> Path:
    """A dataset YAML over ``root`` with a ``clean`` split and one split per kind of bad sample
    (:data:`MASK_SPLITS`), plus ``loop``: a folder holding a symlink loop beside good pairs.

    With ``rgb_masks`` the masks are colour-coded (encoding ``rgb``) and the ``out_of_range``
    split holds a colour not in the class list.
    """
    rng = _rng(2)
    root.mkdir(parents=True, exist_ok=True)

    def pair(split: str, stem: str, mask: np.ndarray | bytes, size=(16, 20), image=None) -> None:  # noqa: ANN001
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        if image is None:
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / split / "images" / f"{stem}.png"
            )
        else:
            (root / split / "images" / f"{stem}.png").write_bytes(image)
        target = root / split / "masks" / f"{stem}.png"
        if isinstance(mask, bytes):
            target.write_bytes(mask)
        else:
            Image.fromarray(mask).save(target)

    def good(h: int = 16, w: int = 20) -> np.ndarray:
        m = rng.integers(0, 3, (h, w), dtype=np.uint8)
        if rgb_masks:
            return np.asarray([c["color"] for c in CLASSES], np.uint8)[m]
        return m

    for split in ("clean", "out_of_range", "wrong_size", "zero_mask", "bad_image", "loop"):
        pair(split, "ok_a", good())
        pair(split, "ok b", good())  # a space in the name
    pair("clean", os.fsdecode(b"caf\xe9"), good())  # a name that is not UTF-8 (Latin-1)
    # the same three images listed in a list file, written as bytes (the names are not UTF-8)
    listing = b"".join(
        b"clean/images/%s.png clean/masks/%s.png\n" % (n, n) for n in (b"ok_a", b"caf\xe9")
    )
    (root / "clean_list.txt").write_bytes(listing)
    bad = good()
    if rgb_masks:
        bad[3:6, 3:6] = (12, 34, 56)
    else:
        bad[3:6, 3:6] = 7
    pair("out_of_range", "bad", bad)
    pair("wrong_size", "bad", good(8, 10))
    pair("zero_mask", "bad", b"")
    pair("bad_image", "bad", good(), image=b"not a png at all")
    for sub in ("images", "masks"):
        (root / "empty" / sub).mkdir(parents=True, exist_ok=True)
        # a symlink loop: a -> b -> a, named like images, and a folder linking to itself
        loop = root / "loop" / sub
        os.symlink("loop_b.png", loop / "loop_a.png")
        os.symlink("loop_a.png", loop / "loop_b.png")
        os.symlink(".", loop / "self")
    splits = {
        s: {"images": f"{s}/images", "masks": f"{s}/masks"} for s in ("clean", *MASK_SPLITS, "loop")
    }
    splits["listed"] = {"list": "clean_list.txt"}
    spec = {
        "name": "hostile",
        "root": ".",
        "classes": CLASSES if rgb_masks else [{"name": c["name"]} for c in CLASSES],
        "mask": {"encoding": "rgb"} if rgb_masks else {"encoding": "index", "ignore_index": 255},
        "splits": splits,
    }
    import yaml

    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path
