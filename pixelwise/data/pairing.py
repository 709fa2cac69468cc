"""How a split's files are found: images paired with masks in folders, and split list files.

Paired folders (a split's ``images`` and ``masks``, each one folder or a list of folders):

* ``images[i]`` pairs with ``masks[i]``, by position;
* an image's name without its extension must fit ``pair.image``, a pattern holding one ``{id}``;
  its mask is the file of the mask folder whose name fits ``pair.mask`` with the same id. Both
  default to ``{id}`` (the same stem); ``mask_suffix: _L`` is ``pair: {mask: "{id}_L"}``;
* ``image_ext`` / ``mask_ext`` keep only the files with those extensions;
* where images and masks share a folder, a file that fits only the mask rule (``mask_ext`` and
  ``pair.mask``) is a mask, never an image; one that fits both goes to the longer pattern (to the
  masks on a tie); a spec whose rules cannot tell them apart is refused.

List files hold one entry per line: ``image``, ``image<TAB>mask``, or the historical ``image mask``
(white space between two paths that hold none). A line holding no tab that names one existing file
is that file, spaces included.
"""

from __future__ import annotations

import errno
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from ..errors import PixelwiseError
from .io import IMAGE_EXTENSIONS

__all__ = [
    "ID",
    "PairSpec",
    "check_pattern",
    "normalise_exts",
    "same_folder_problem",
    "list_images",
    "unreadable_links",
    "pair_folder",
    "list_entries",
]

ID = "{id}"  # the one placeholder of a pair pattern
_SHOWN = 5  # unpaired files named in a problem line


def check_pattern(pattern: str, key: str) -> str:
    """``pattern`` if it is a valid pair pattern, else a one-line ``ValueError`` naming ``key``."""
    rest = pattern.replace(ID, "", 1)
    if pattern.count(ID) != 1 or "{" in rest or "}" in rest:
        raise ValueError(
            f"{key} {pattern!r} must hold exactly one {ID} placeholder and no other braces "
            f'(e.g. "{ID}_label")'
        )
    if "/" in pattern or "\\" in pattern:
        raise ValueError(f"{key} {pattern!r}: a pattern matches file names, not paths")
    if Path(rest).suffix.lower() in IMAGE_EXTENSIONS:
        raise ValueError(
            f"{key} {pattern!r} ends with an extension: a pattern matches the name without it; "
            "choose extensions with image_ext / mask_ext"
        )
    return pattern


class PairSpec(BaseModel):
    """Name patterns pairing an image with its mask, each holding one ``{id}``."""

    model_config = ConfigDict(extra="forbid")

    image: str = ID  # e.g. "{id}_image": case7_image.tif has id case7
    mask: str = ID  # e.g. "{id}_label": the mask of id case7 is case7_label.*

    @field_validator("image", "mask")
    @classmethod
    def _valid(cls, value: str, info) -> str:  # noqa: ANN001 - pydantic's ValidationInfo
        return check_pattern(value, f"pair.{info.field_name}")


def normalise_exts(value: object, key: str) -> object:
    """``image_ext`` / ``mask_ext`` as a list of lower-case extensions with their dot (a string is
    one); an extension that is not an image's is a ``ValueError``. Other types are left to pydantic."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        return value
    out = [v.lower() if v.startswith(".") else f".{v.lower()}" for v in items]
    for ext in out:
        if ext not in IMAGE_EXTENSIONS:
            raise ValueError(
                f"{key} {ext!r} is not an image extension ({', '.join(IMAGE_EXTENSIONS)})"
            )
    if not out:
        raise ValueError(f"{key} is empty: list at least one extension, or leave it out")
    return out


def _exts(
    image_ext: Sequence[str] | None, mask_ext: Sequence[str] | None, same: bool
) -> tuple[set[str], set[str]]:
    """The extensions read as images and as masks; in a shared folder, one side's list leaves the
    other side the remaining image extensions."""
    every = set(IMAGE_EXTENSIONS)
    images = set(image_ext) if image_ext else every
    masks = set(mask_ext) if mask_ext else every
    if same and mask_ext and not image_ext:
        images = every - masks
    if same and image_ext and not mask_ext:
        masks = every - images
    return images, masks


def same_folder_problem(
    folder: str,
    patterns: tuple[str, str],
    image_ext: Sequence[str] | None,
    mask_ext: Sequence[str] | None,
) -> str | None:
    """Why images and masks sharing ``folder`` cannot be told apart, or ``None`` when they can."""
    images, masks = _exts(image_ext, mask_ext, True)
    if patterns[0] != patterns[1] or not images & masks:
        return None
    return (
        f"images and masks are the same folder {folder!r}: say which files are masks with mask_ext "
        "(e.g. [.png]), mask_suffix or pair"
    )


def list_images(folder: Path, extensions: set[str] | None = None) -> list[Path]:
    """The image files of ``folder`` (with one of ``extensions``), sorted."""
    if not folder.is_dir():
        raise PixelwiseError(f"{folder}: folder not found")
    exts = extensions if extensions is not None else set(IMAGE_EXTENSIONS)
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in exts and f.is_file())


def unreadable_links(folder: Path) -> list[str]:
    """Problems for image-named symbolic links that lead nowhere (broken, or a loop)."""
    if not folder.is_dir():
        return []
    return [
        f"{f}: {'symbolic link loop' if f.is_symlink() and _loops(f) else 'broken symbolic link'}"
        ", not an image"
        for f in sorted(folder.iterdir())
        if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_symlink() and not f.exists()
    ]


def _loops(link: Path) -> bool:
    try:
        link.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop so
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _regex(pattern: str) -> re.Pattern[str]:
    head, tail = pattern.split(ID)
    return re.compile(re.escape(head) + "(?P<id>.+)" + re.escape(tail), re.DOTALL)


def _named(files: list[Path]) -> str:
    shown = ", ".join(f.name for f in files[:_SHOWN])
    return shown + (f" and {len(files) - _SHOWN} more" if len(files) > _SHOWN else "")


def pair_folder(
    images_dir: Path,
    masks_dir: Path | None,
    patterns: tuple[str, str],
    image_ext: Sequence[str] | None = None,
    mask_ext: Sequence[str] | None = None,
    *,
    unlabelled: bool = False,
) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """Pair the images of one folder with their masks by the rules of the module docstring.

    ``unlabelled``: an image without a mask is a pair ``(image, None)`` rather than a problem (the
    images still to label, for ``pixelwise annotate``).

    Returns:
        ``(image, mask)`` pairs (mask ``None`` without a mask folder) and the problems: broken links,
        an image with no mask or several, images that do not fit ``pair.image``, and mask files
        that belong to no image.
    """
    same = masks_dir is not None and images_dir.resolve() == masks_dir.resolve()
    img_exts, mask_exts = _exts(image_ext, mask_ext, same)
    problems = unreadable_links(images_dir)
    if masks_dir is not None and not same:
        problems += unreadable_links(masks_dir)
    if same and (why := same_folder_problem(str(images_dir), patterns, image_ext, mask_ext)):
        return [], [why]
    image_re, mask_re = _regex(patterns[0]), _regex(patterns[1])
    mask_files = list_images(masks_dir, mask_exts) if masks_dir is not None else []
    if same:  # a file fitting both rules goes to the longer pattern (a tie: to the masks)
        mask_wins = len(patterns[1]) >= len(patterns[0])
        mask_files = [
            m
            for m in mask_files
            if mask_re.fullmatch(m.stem)
            and (mask_wins or m.suffix.lower() not in img_exts or not image_re.fullmatch(m.stem))
        ]
    by_id: dict[str, list[Path]] = defaultdict(list)
    for m in mask_files:
        if hit := mask_re.fullmatch(m.stem):
            by_id[hit["id"]].append(m)
    is_mask = set(mask_files) if same else set()
    pairs: list[tuple[Path, Path | None]] = []
    misfits: list[Path] = []
    used: set[Path] = set()
    for img in list_images(images_dir, img_exts):
        hit = None if img in is_mask else image_re.fullmatch(img.stem)
        if hit is None:
            if img not in is_mask:
                misfits.append(img)
            continue
        if masks_dir is None:
            pairs.append((img, None))
            continue
        found = by_id.get(hit["id"], [])
        used.update(found)
        if len(found) == 1 or (unlabelled and not found):
            pairs.append((img, found[0] if found else None))
            continue
        name = patterns[1].replace(ID, hit["id"])
        problems.append(
            f"{img}: no mask named {name}.* in {masks_dir}"
            if not found
            else f"{img}: {len(found)} files could be its mask in {masks_dir} ({_named(found)}); "
            "choose one extension with mask_ext"
        )
    if misfits:
        problems.append(
            f"{images_dir}: {len(misfits)} image file(s) do not fit pair.image "
            f"{patterns[0]!r}: {_named(misfits)}"
        )
    unpaired = [m for m in mask_files if m not in used]
    if unpaired:
        rule = f" (mask names: {patterns[1]!r})" if patterns[1] != ID else ""
        problems.append(
            f"{masks_dir}: {len(unpaired)} mask file(s) belong to no image{rule}: {_named(unpaired)}"
        )
    return pairs, problems


def list_entries(line: str, root: Path | None = None) -> list[str]:
    """The paths on one list-file line (``[]`` for a blank or ``#`` comment line): split on tabs
    when it holds one; else the whole line when it names an existing file under ``root``; else
    split on white space (``image mask``)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return []
    if "\t" in text:
        return [f.strip() for f in text.split("\t") if f.strip()]
    if root is not None and len(text.split()) > 1 and os.path.isfile(root / text):
        return [text]
    return text.split()
