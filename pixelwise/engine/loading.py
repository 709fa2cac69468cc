"""Loading a trained model: one function, :func:`load_model`, owns the dispatch over the four things a
``--model`` value can name — a checkpoint (``.ckpt``), an exported ONNX model (``.onnx``, run by ONNX
Runtime), a model bundle (``NAME.json`` / ``NAME.safetensors``) or a bundled model's name
(``camvid``) — and returns a :class:`LoadedModel`: the network (in eval mode) with its :class:`ModelMeta` and, for a
bundle, its description. *How* the model is then run (precision, TTA, tiling, CRF) is not part of it:
that is an :class:`~pixelwise.engine.inference.InferenceConfig`, and the two meet in a
:class:`~pixelwise.engine.predictor.Segmenter`.

Layering: this module sits on :mod:`.checkpoint` (the ``.ckpt`` format), :mod:`.bundle` (the bundle
format) and :mod:`.onnx_model`; nothing below it imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import PixelwiseError
from ..pretrained import resolve_model
from .bundle import is_bundle_path, read_bundle
from .checkpoint import ModelMeta, build_model, load_checkpoint

__all__ = ["LoadedModel", "load_model", "resolve_model"]


@dataclass(frozen=True)
class LoadedModel:
    """A trained network and what describes it.

    Attributes:
        model: maps normalised N×C×H×W images to N×K×H×W logits (K = 1 for a sigmoid model).
        meta: classes, colours, normalisation, architecture (:class:`ModelMeta`).
        info: a bundle's description (its ``.json``, checked), or ``None`` for other sources; its
            ``inference`` block is the precision the bundle records as checked.
        source: where it came from (a path), or ``None`` for a model built in memory.
    """

    model: nn.Module
    meta: ModelMeta
    info: dict[str, Any] | None = field(default=None, compare=False)
    source: str | None = None

    @property
    def recorded_inference(self) -> dict[str, Any]:
        """The bundle's ``inference`` block (``{"amp": "bf16", "check": {...}}``), or ``{}``."""
        return dict((self.info or {}).get("inference") or {})


def load_model(source: str | os.PathLike[str], *, device: str = "auto") -> LoadedModel:
    """Load a trained model from a checkpoint, an ONNX file, a bundle or a bundled model's name (an
    existing file wins over a name). Everything in the file is checked before a network is built
    from it (:func:`~pixelwise.engine.checkpoint.load_checkpoint`, :func:`read_bundle`).

    Args:
        source: the model file, or a bundled model's name.
        device: where an ONNX model's session runs (``auto``, ``cpu``, ``cuda``); PyTorch models
            are loaded on the CPU and moved by the :class:`~pixelwise.engine.predictor.Segmenter`.

    Raises:
        PixelwiseError: a missing, unreadable or inconsistent model file — one line.
    """
    path = resolve_model(source)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_model import load_onnx

        model, meta = load_onnx(path, device=device)
        return LoadedModel(model, meta, None, str(path))
    if is_bundle_path(path):
        model, meta, info = read_bundle(path)
        return LoadedModel(model, meta, info, str(path))
    ckpt = load_checkpoint(path)
    meta = ModelMeta.from_dict(ckpt.get("meta", {}), where=str(path))
    if not isinstance(ckpt.get("model"), dict):
        raise PixelwiseError(f"{path}: checkpoint holds no model weights")
    model = build_model(meta, ckpt["model"], where=str(path))
    return LoadedModel(model.eval(), meta, None, str(path))
