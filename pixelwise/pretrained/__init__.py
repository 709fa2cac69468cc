"""Models shipped inside the package, loaded by name: ``pixelwise.load("camvid")``.

A bundled model is a pair of files in this folder, ``<name>.safetensors`` (the weights) and
``<name>.json`` (what using them needs: architecture, classes, colours, normalisation, the input size
the model was trained at, and free provenance such as its test scores); the format is
:mod:`pixelwise.engine.bundle`'s. A name is bundled when its ``.json`` file is here.

Lookup order: the folder named by the environment variable ``PIXELWISE_PRETRAINED_DIR`` when it is
set (your own bundles, or a test's), then this package folder. ``pixelwise bundle`` writes into the
first of them by default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import PixelwiseError

__all__ = [
    "resolve_model",
    "DEFAULT_MODEL",
    "ENV_VAR",
    "bundled_path",
    "is_bundle_name",
    "list_bundled",
    "pretrained_dir",
    "search_dirs",
]

# The model that ``predict``, ``evaluate``, ``demo`` (and ``serve``) use when --model is omitted.
DEFAULT_MODEL = "camvid"

ENV_VAR = "PIXELWISE_PRETRAINED_DIR"

# A bundle name: letters, digits, '_' and '-'. No dots or slashes, so a name never looks like a path
# ("best.ckpt", "runs/x") and a path never like a name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

_PACKAGE_DIR = Path(__file__).resolve().parent


def is_bundle_name(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` has the shape of a bundle name (``camvid``, ``membrane-v2``), not a path."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def search_dirs() -> list[Path]:
    """Folders searched for bundled models, first match wins: ``$PIXELWISE_PRETRAINED_DIR`` (when
    set), then the package's own ``pixelwise/pretrained/`` folder."""
    dirs = []
    if env := os.environ.get(ENV_VAR, "").strip():
        dirs.append(Path(os.path.expanduser(env)))
    dirs.append(_PACKAGE_DIR)
    return list(dict.fromkeys(dirs))


def pretrained_dir() -> Path:
    """Where ``pixelwise bundle`` writes by default: the first of :func:`search_dirs`."""
    return search_dirs()[0]


def list_bundled() -> list[str]:
    """Names of the bundled models found in :func:`search_dirs`, sorted."""
    names = {
        p.stem
        for d in search_dirs()
        if d.is_dir()
        for p in d.glob("*.json")
        if is_bundle_name(p.stem) and p.is_file()
    }
    return sorted(names)


def bundled_path(name: str) -> Path:
    """The ``.json`` file of the bundled model ``name`` (first match in :func:`search_dirs`).

    Raises:
        PixelwiseError: no bundled model has that name (the message lists those that exist).
    """
    if is_bundle_name(name):
        for d in search_dirs():
            path = d / f"{name}.json"
            if path.is_file():
                return path
    available = ", ".join(list_bundled()) or "none installed"
    where = " or ".join(str(d) for d in search_dirs())
    raise PixelwiseError(
        f"{name}: no such model file, and no bundled model of that name in {where} "
        f"(bundled: {available})"
    )


def resolve_model(path: str | os.PathLike[str]) -> Path:
    """Where a ``--model`` value points: an existing file wins; otherwise a bare name (``camvid``)
    is a bundled model's ``.json`` (:func:`bundled_path`); anything else is returned as a path, for
    its loader to report as missing.

    Raises:
        PixelwiseError: a bare name that is neither a file nor a bundled model (the message lists
            the bundled models).
    """
    p = Path(path)
    if p.is_file():
        return p
    if is_bundle_name(os.fspath(path)):
        return bundled_path(os.fspath(path))
    return p
