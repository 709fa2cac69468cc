"""Exported models run by ONNX Runtime, standing in for the PyTorch model of a
:class:`~pixelwise.engine.predictor.Segmenter`.

:class:`OnnxModule` is an ``nn.Module`` without parameters whose ``forward`` hands the batch to an
``onnxruntime.InferenceSession`` and returns float32 logits on the input's device; ``.to()``,
``.eval()`` and the like change nothing. :func:`load_onnx` opens a file written by
:func:`pixelwise.engine.export.export_onnx` and reads the :class:`ModelMeta` stored in it.

``onnxruntime`` is an optional dependency (``pip install 'pixelwise[onnx]'``), imported only here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import PixelwiseError, first_line
from ..layers import pad_to_multiple
from .checkpoint import ModelMeta

__all__ = ["META_KEY", "MULTIPLE_KEY", "OnnxModule", "load_onnx"]

_INSTALL = "pip install 'pixelwise[onnx]'"


# Where an exported file keeps its ModelMeta (JSON) and the multiple its input sides are padded to.
META_KEY = "pixelwise.meta"
MULTIPLE_KEY = "pixelwise.input_multiple"


def _import_onnxruntime(where: str) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise PixelwiseError(
            f"{where}: running an ONNX model needs onnxruntime, which is not installed: {_INSTALL}"
        ) from None
    return onnxruntime


def _providers(ort: Any, device: str, where: str) -> list[str | tuple[str, dict[str, Any]]]:
    """ONNX Runtime execution providers for ``auto``, ``cpu`` or ``cuda[:N]``."""
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cpu" or (device == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if device == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    if kind != "cuda" or not (index == "" or index.isdigit()):
        raise PixelwiseError(f"{where}: unknown device {device!r}; use auto, cpu or cuda[:N]")
    if not has_cuda:
        raise PixelwiseError(
            f"{where}: device {device!r} requested but this onnxruntime has no CUDA provider "
            f"(install onnxruntime-gpu)"
        )
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind the interface of a PyTorch segmentation model.

    Inputs are zero-padded (bottom/right) to a multiple of ``multiple`` before the session and the
    logits cropped back, as the PyTorch model does inside its forward; the exported graph holds the
    model after that padding (:mod:`pixelwise.engine.export`).

    Args:
        session: an ``onnxruntime.InferenceSession`` with one image input and one logits output.
        name: what to call the model in messages (its file).
        multiple: the graph's height and width must be multiples of this.

    Shape:
        x: (N, C, H, W) → (N, K, H, W) float32 on ``x``'s device.
    """

    def __init__(self, session: Any, *, name: str = "ONNX model", multiple: int = 1) -> None:
        super().__init__()
        self.session = session
        self.name = name
        self.multiple = max(1, int(multiple))
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        channels = inp.shape[1] if len(inp.shape) == 4 else None
        self.in_channels: int | None = channels if isinstance(channels, int) else None
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or (self.in_channels is not None and x.shape[1] != self.in_channels):
            raise PixelwiseError(
                f"{self.name}: expects N×{self.in_channels or 'C'}×H×W images, got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        padded, _ = pad_to_multiple(x.detach().to("cpu", torch.float32), self.multiple)
        array = np.ascontiguousarray(padded.numpy())
        (logits,) = self.session.run([self.output_name], {self.input_name: array})
        out = torch.from_numpy(logits)[..., :h, :w]
        return out.to(device=x.device, dtype=torch.float32).contiguous()

    @property
    def input_multiple(self) -> int:
        """Inputs are zero-padded (bottom/right) to a multiple of this, as PyTorch models do."""
        return self.multiple

    def to(self, *args: Any, **kwargs: Any) -> OnnxModule:
        """Nothing to move: the session keeps its providers; outputs follow the input's device."""
        return self

    def extra_repr(self) -> str:
        return f"{self.name}, providers={self.session.get_providers()}"


def load_onnx(
    path: str | os.PathLike[str], *, device: str = "auto", threads: int | None = None
) -> tuple[OnnxModule, ModelMeta]:
    """Open an exported model and its metadata.

    Args:
        path: a ``.onnx`` file written by :func:`pixelwise.engine.export.export_onnx`.
        device: ``cpu``; ``cuda[:N]`` (ONNX Runtime's CUDA provider, which must be installed); ``auto``:
            CUDA when this onnxruntime has it, else CPU.
        threads: ONNX Runtime's intra-op threads (``None``: its default, all cores).

    Returns:
        The model (an :class:`OnnxModule`) and its :class:`ModelMeta`.
    """
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise PixelwiseError(f"{where}: ONNX model not found")
    ort = _import_onnxruntime(where)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(
            where, sess_options=options, providers=_providers(ort, device, where)
        )
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        first = first_line(exc)
        if "INVALID_PROTOBUF" in first or "Protobuf parsing failed" in first:
            raise PixelwiseError(
                f"{where}: not an ONNX model (ONNX Runtime could not parse it)"
            ) from None
        raise PixelwiseError(
            f"{where}: ONNX Runtime cannot load this model ({first[:200]})"
        ) from None
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    if raw is None:
        raise PixelwiseError(
            f"{where}: ONNX model without pixelwise metadata ({META_KEY!r}); export it with "
            f"pixelwise export"
        )
    try:
        fields = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PixelwiseError(f"{where}: malformed pixelwise metadata ({exc})") from None
    if not isinstance(fields, dict):
        raise PixelwiseError(f"{where}: malformed pixelwise metadata (not a JSON object)")
    meta = ModelMeta.from_dict(fields, where=where)
    custom = session.get_modelmeta().custom_metadata_map
    try:
        multiple = int(custom.get(MULTIPLE_KEY, "1"))
    except ValueError:
        raise PixelwiseError(f"{where}: malformed {MULTIPLE_KEY!r} in its metadata") from None
    model = OnnxModule(session, name=where, multiple=multiple)
    if model.in_channels is not None and model.in_channels != meta.in_channels:
        raise PixelwiseError(
            f"{where}: the model takes {model.in_channels} channels but its metadata says "
            f"{meta.in_channels}"
        )
    return model, meta
