"""Checkpoints: one file, written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` of plain containers and tensors only, so ``torch.load(weights_only=True)``
reads it; anything else (a pickled class, a code payload) is refused. ``meta`` records what is needed to
rebuild and use the model: architecture, its arguments, classes, colours, normalisation, and whether
it is a softmax or a one-channel sigmoid model. Fields added later have defaults, so older checkpoints
still load. A training run records each checkpoint's SHA-256 in its ``manifest.json``;
:func:`load_checkpoint` refuses a file whose digest differs from the one recorded beside it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path, write_text_atomic
from ..errors import PixelwiseError, first_line
from ..registry import create_model

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
    """Everything beside the weights that using a model needs."""

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


def build_model(meta: ModelMeta, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Rebuild the architecture from ``meta`` and load ``state_dict`` when given."""
    kwargs = dict(meta.model_kwargs)
    if state_dict is not None:
        kwargs.pop("encoder_weights", None)  # pretrained weights come from the state dict instead
    model = create_model(
        meta.arch, num_classes=meta.out_channels, in_channels=meta.in_channels, **kwargs
    )
    if state_dict is not None:
        try:
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
        except RuntimeError as exc:
            first = first_line(exc, last=True, default="shape mismatch")
            raise PixelwiseError(
                f"weights do not match architecture {meta.arch!r} {meta.model_kwargs}: {first[:200]}"
            ) from None
        if missing or unexpected:
            raise PixelwiseError(
                f"weights do not match architecture {meta.arch!r}: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
    return model
