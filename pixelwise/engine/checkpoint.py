"""Checkpoints: one file, written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` of plain containers and tensors only, so ``torch.load(weights_only=True)``
reads it; anything else (a pickled class, a code payload) is refused. ``meta`` records what is needed to
rebuild and use the model: architecture, its arguments, classes, colours, normalisation, and whether
it is a softmax or a one-channel sigmoid model. Fields added later have defaults, so older checkpoints
still load. A file's metadata is untrusted: :class:`ModelMeta` refuses classes, colours or a
normalisation it cannot be used with, and :func:`build_model` checks the architecture's arguments
against the registry's limits, the model's size and every weight's shape on the ``meta`` device
before it allocates the model. A training run records each checkpoint's SHA-256 in its
``manifest.json``; :func:`load_checkpoint` refuses a file whose digest differs from the one
recorded beside it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path, write_text_atomic
from ..errors import PixelwiseError, first_line
from ..registry import MAX_CLASSES, MAX_IN_CHANNELS, create_model, model_skeleton

__all__ = [
    "FORMAT",
    "MANIFEST",
    "ModelMeta",
    "save_checkpoint",
    "load_checkpoint",
    "build_model",
    "read_checksums",
    "sha256_file",
]

FORMAT = "pixelwise.checkpoint/1"
MANIFEST = "manifest.json"  # a run folder's manifest: versions, command and checkpoint checksums


@dataclass
class ModelMeta:
    """Everything beside the weights that using a model needs.

    Checked on creation, one line per problem: one distinct name and one colour (three integers
    0-255) for each of ``num_classes`` (1 to 255), one finite mean and one positive standard
    deviation for each of ``in_channels`` (1 to 16).
    """

    arch: str
    num_classes: int
    in_channels: int
    class_names: list[str]
    colors: list[list[int]]
    mean: list[float]
    std: list[float]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    output: str = "softmax"  # "softmax", or "sigmoid": one logit channel for a 2-class dataset
    threshold: float = 0.5  # sigmoid: class 1 where σ(logit) > threshold

    def __post_init__(self) -> None:
        _check_meta(self)
        if self.output not in ("softmax", "sigmoid"):
            raise PixelwiseError(
                f"model output must be 'softmax' or 'sigmoid', got {self.output!r}"
            )
        if self.output == "sigmoid" and self.num_classes != 2:
            raise PixelwiseError(
                f"a sigmoid (one-channel) model needs exactly 2 classes, got {self.num_classes}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise PixelwiseError(
                f"threshold must lie strictly between 0 and 1, got {self.threshold}"
            )

    @property
    def out_channels(self) -> int:
        """Logit channels of the network: 1 for a sigmoid model, else one per class."""
        return 1 if self.output == "sigmoid" else self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "checkpoint") -> ModelMeta:
        try:
            return cls(**d)
        except (TypeError, PixelwiseError) as exc:
            raise PixelwiseError(f"{where}: malformed model metadata ({exc})") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v
    )


def _check_meta(m: ModelMeta) -> None:
    """The fields' types, lengths and ranges: what a model file says about its classes and inputs
    must be usable before anything is built from it or predicted with it."""
    if not isinstance(m.arch, str) or not m.arch:
        raise PixelwiseError(f"arch must name an architecture, got {m.arch!r}")
    if not _is_int(m.num_classes) or not 1 <= m.num_classes <= MAX_CLASSES:
        raise PixelwiseError(
            f"num_classes must be an integer from 1 to {MAX_CLASSES}, got {m.num_classes!r}"
        )
    if not _is_int(m.in_channels) or not 1 <= m.in_channels <= MAX_IN_CHANNELS:
        raise PixelwiseError(
            f"in_channels must be an integer from 1 to {MAX_IN_CHANNELS}, got {m.in_channels!r}"
        )
    k = m.num_classes
    names = m.class_names
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise PixelwiseError(f"class_names must be a list of non-empty names, got {names!r:.80}")
    if len(names) != k:
        raise PixelwiseError(f"class_names has {len(names)} names for num_classes {k}")
    if len(set(names)) != k:
        raise PixelwiseError(f"class_names repeats a name: {names!r:.80}")
    colors = m.colors
    if not isinstance(colors, (list, tuple)) or len(colors) != k:
        n = len(colors) if isinstance(colors, (list, tuple)) else repr(colors)
        raise PixelwiseError(f"colors has {n} colours for num_classes {k}")
    for i, c in enumerate(colors):
        if not (
            isinstance(c, (list, tuple))
            and len(c) == 3
            and all(_is_int(v) and 0 <= v <= 255 for v in c)
        ):
            raise PixelwiseError(f"colors[{i}] = {c!r:.40} is not three integers from 0 to 255")
    for key in ("mean", "std"):
        values = getattr(m, key)
        if not _numbers(values) or len(values) != m.in_channels:
            raise PixelwiseError(
                f"{key} must be {m.in_channels} number(s), one per input channel, got {values!r:.80}"
            )
        if not all(math.isfinite(v) for v in values) or (key == "std" and min(values) <= 0):
            what = "finite and positive" if key == "std" else "finite"
            raise PixelwiseError(f"{key} must be {what}, got {values!r}")
    if not isinstance(m.model_kwargs, dict) or not all(isinstance(x, str) for x in m.model_kwargs):
        raise PixelwiseError(
            f"model_kwargs must be a mapping of argument names, got {m.model_kwargs!r:.80}"
        )
    if not isinstance(m.dataset, str):
        raise PixelwiseError(f"dataset must be a name, got {m.dataset!r:.80}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checksums(manifest: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The ``checksums`` section of a run manifest (``{}`` when absent or unreadable)."""
    try:
        sums = json.loads(Path(manifest).read_text(encoding="utf-8")).get("checksums", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return sums if isinstance(sums, dict) else {}


def _record_checksum(manifest: Path, name: str, digest: str) -> None:
    """Record ``name``'s SHA-256 in the run manifest, keeping the one it replaces as ``previous``: a
    crash between this write and the checkpoint's rename leaves a manifest that still vouches for
    the file on disk."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    except ValueError:
        data = {}
    sums = data.setdefault("checksums", {})
    old = sums.get(name, {}).get("sha256")
    sums[name] = {"sha256": digest, **({"previous": old} if old and old != digest else {})}
    write_text_atomic(manifest, json.dumps(data, indent=2) + "\n")


def save_checkpoint(
    path: str | os.PathLike[str],
    payload: dict[str, Any],
    *,
    manifest: str | os.PathLike[str] | None = None,
) -> None:
    """Write ``payload`` (plain containers and tensors) atomically: temp file, fsync, rename.

    Args:
        path: the checkpoint file.
        payload: what to save.
        manifest: a run manifest (JSON) in which to record the file's SHA-256 before it replaces
            the previous one; :func:`load_checkpoint` checks it.

    Raises:
        PixelwiseError: the file could not be written (a full disk...); the previous file at
            ``path``, if any, is untouched.
    """
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    data = buf.getvalue()
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
            if manifest is not None:
                _record_checksum(Path(manifest), Path(path).name, hashlib.sha256(data).hexdigest())
    except OSError as exc:
        kept = "the previous checkpoint is intact" if Path(path).exists() else "nothing written"
        raise PixelwiseError(
            f"{path}: cannot write the checkpoint ({exc.strerror or exc}); {kept}"
        ) from None


def _verify_checksum(path: Path) -> None:
    """Compare ``path`` with the SHA-256 the run manifest beside it records for it, if any."""
    manifest = path.parent / MANIFEST
    entry = read_checksums(manifest).get(path.name) if manifest.is_file() else None
    if not isinstance(entry, dict) or not entry.get("sha256"):
        return
    digest = sha256_file(path)
    if digest not in (entry["sha256"], entry.get("previous")):
        raise PixelwiseError(
            f"{path}: checksum mismatch: its SHA-256 is {digest[:16]}..., {manifest} records "
            f"{str(entry['sha256'])[:16]}...; the file changed after it was written (refusing it)"
        )


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``); raise one clear line if it is not one, or
    if the run manifest beside it (``manifest.json``) records another SHA-256 for it."""
    p = Path(path)
    if not p.is_file():
        raise PixelwiseError(f"{p}: checkpoint not found")
    _verify_checksum(p)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = first_line(exc, default="unsafe content")
        raise PixelwiseError(
            f"{p}: refused to load: the file holds objects other than tensors and plain data "
            f"({first[:200]})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types on garbage input
        first = first_line(exc)
        raise PixelwiseError(f"{p}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise PixelwiseError(f"{p}: not a pixelwise checkpoint (expected format {FORMAT})")
    return ckpt


def _compare_shapes(skeleton: nn.Module, state_dict: dict[str, Any], meta: ModelMeta) -> None:
    """Refuse weights whose names or shapes differ from the model ``meta`` describes (``skeleton``,
    built on the meta device), before the model is built for real."""
    expected = skeleton.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise PixelwiseError(
            f"weights do not match architecture {meta.arch!r} {meta.model_kwargs}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, want in expected.items():
        got = state_dict[key]
        if not isinstance(got, torch.Tensor):
            raise PixelwiseError(f"weights: {key!r} is not a tensor ({type(got).__name__})")
        if tuple(got.shape) != tuple(want.shape):
            raise PixelwiseError(
                f"weights do not match architecture {meta.arch!r} {meta.model_kwargs}: "
                f"{key!r} has shape {tuple(got.shape)}, the architecture {tuple(want.shape)}"
            )


def _load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], meta: ModelMeta) -> None:
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = first_line(exc, last=True, default="shape mismatch")
        raise PixelwiseError(
            f"weights do not match architecture {meta.arch!r} {meta.model_kwargs}: {first[:200]}"
        ) from None


def build_model(
    meta: ModelMeta, state_dict: dict[str, torch.Tensor] | None = None, *, where: str = ""
) -> nn.Module:
    """Rebuild the architecture from ``meta`` and load ``state_dict`` when given.

    Nothing large is allocated before everything is checked: the architecture and its arguments
    against the registry's limits, its size, and (with ``state_dict``) every weight's name and
    shape against the model built on the ``meta`` device (:func:`~pixelwise.registry.model_skeleton`).

    Raises:
        PixelwiseError: one line, prefixed with ``where`` (the file) when given.
    """
    kwargs = dict(meta.model_kwargs)
    if state_dict is not None:
        kwargs.pop("encoder_weights", None)  # pretrained weights come from the state dict instead
    args = {"num_classes": meta.out_channels, "in_channels": meta.in_channels, **kwargs}
    prefix = f"{where}: " if where else ""
    try:
        if "num_classes" in kwargs or "in_channels" in kwargs:
            raise PixelwiseError("model_kwargs must not set num_classes or in_channels")
        skeleton = model_skeleton(meta.arch, **args)
        if state_dict is not None:
            _compare_shapes(skeleton, state_dict, meta)
        del skeleton
        model = create_model(meta.arch, **args)
        if state_dict is not None:
            _load_weights(model, state_dict, meta)
    except PixelwiseError as exc:
        raise PixelwiseError(f"{prefix}{exc}") from None
    return model
