"""ONNX export of any registered architecture, with its :class:`ModelMeta` inside the file.

The file has one input ``image`` (N×C×H×W float32, normalised as ``meta.mean`` / ``meta.std`` say) and
one output ``logits`` (N×K×H×W), with batch, height and width all dynamic. ``meta`` is stored as JSON
under the key ``pixelwise.meta`` in the model's ``metadata_props``, so the file alone is enough to
predict (:func:`pixelwise.engine.onnx_model.load_onnx`).

Exporter: PyTorch's TorchScript exporter (``torch.onnx.export(dynamo=False)``) with ``dynamic_axes``
on batch, height and width, opset 17 by default. Every pixelwise model pads its input to a multiple of
its stride (``model.input_multiple``: 32, or 8/16 when dilated) and crops the logits back; the graph
holds the model *after* that padding, so it takes heights and widths that are multiples of
``input_multiple`` — any such size, the dimensions stay symbolic — and the multiple is stored in the
metadata (``pixelwise.input_multiple``). :class:`pixelwise.engine.onnx_model.OnnxModule` pads and crops
around the session exactly as the PyTorch model does, so a ``.onnx`` used through pixelwise takes any
size; another runtime must pad to the multiple itself. Why not the ``dynamo=True`` exporter: with
symbolic sizes, timm's TensorFlow-"same" padding (EfficientNet-Lite) makes torch.export's shape
reasoning explode — an FCN-8s on EfficientNet-Lite0 had not finished exporting after 10 minutes, where
this path takes about a second — and exporting on stride multiples keeps every traced branch (no
padding, same-size resizes) true for every size the graph accepts. Adaptive pooling is
:class:`pixelwise.layers.pooling.AdaptiveAvgPool2d` (averaging matrices built from the feature size), so
pyramid and image pooling follow the input size in the graph.

``onnx`` and ``onnxscript`` (the exporter's dependencies) are imported only here, when exporting.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path
from ..errors import PixelwiseError, first_line
from .checkpoint import ModelMeta
from .checks import compare_logits, plain_segmenter
from .loading import load_model
from .onnx_model import META_KEY, MULTIPLE_KEY, load_onnx

__all__ = [
    "CHECK_SIZES",
    "INPUT_NAME",
    "META_KEY",
    "MULTIPLE_KEY",
    "OUTPUT_NAME",
    "check_onnx",
    "compare_onnx",
    "export_checkpoint",
    "export_onnx",
]

DEFAULT_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# (H, W) sizes :func:`check_onnx` compares at: one a multiple of 32, one that is not
CHECK_SIZES: tuple[tuple[int, int], ...] = ((128, 160), (101, 147))

_INSTALL = "pip install 'pixelwise[onnx]'"


class _Logits(nn.Module):
    """The model with a plain one-argument forward (the tracer passes positional arguments only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _require_exporter() -> None:
    """Raise one clear line when the exporter's dependencies are missing."""
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise PixelwiseError(
                f"ONNX export needs the {module} package, which is not installed: {_INSTALL}"
            ) from None


def _dims(value: Any) -> list[int | str]:
    """The shape of an ONNX ``ValueInfoProto``: names for dynamic axes, sizes for fixed ones."""
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _check_sample_size(sample_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in sample_size)
    if len(size) != 2 or min(size) < 2:
        raise PixelwiseError(f"sample_size must be (height, width), both >= 2, got {sample_size!r}")
    return size  # type: ignore[return-value]


def export_onnx(
    model: nn.Module,
    meta: ModelMeta,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    sample_size: Sequence[int] = (256, 320),
) -> Path:
    """Export ``model`` to an ONNX file (written atomically) with ``meta`` embedded.

    Args:
        model: a network mapping N×C×H×W images to N×K×H×W logits (eval mode is used while
            exporting; the model's mode is restored after).
        meta: its metadata; ``meta.in_channels`` and ``meta.out_channels`` must match the model.
        path: the ``.onnx`` file to write.
        opset: ONNX opset version; ``None``: the exporter's default.
        sample_size: (H, W) of the sample input that is traced, rounded up to the model's
            ``input_multiple``; the graph takes any multiple of it (pixelwise pads other sizes).

    Returns:
        ``path``.

    Shape:
        image: (N, meta.in_channels, H, W) float32 → logits: (N, meta.out_channels, H, W) float32,
        N, H and W dynamic.
    """
    _require_exporter()
    import onnx

    multiple = int(getattr(model, "input_multiple", 1))
    h, w = (-(-int(v) // multiple) * multiple for v in _check_sample_size(sample_size))
    device = next(iter(model.parameters()), torch.empty(0)).device
    sample = torch.randn(2, meta.in_channels, h, w, device=device)
    axes = {0: "batch", 2: "height", 3: "width"}
    was_training = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shapes read as Python ints
            torch.onnx.export(
                _Logits(model),
                (sample,),
                buf,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                opset_version=opset or DEFAULT_OPSET,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise PixelwiseError(
            f"{meta.arch}: ONNX export failed ({type(exc).__name__}: {first_line(exc)[:200]})"
        ) from exc
    finally:
        model.train(was_training)
    proto = onnx.load_model_from_string(buf.getvalue())

    out_dims = _dims(proto.graph.output[0])
    channels = out_dims[1] if len(out_dims) == 4 else 0
    if isinstance(channels, str):  # the tracer left it symbolic: it is the model's class count
        proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = meta.out_channels
        channels = meta.out_channels
    if channels != meta.out_channels:
        raise PixelwiseError(
            f"{meta.arch}: the model gives {channels} logit channels but its metadata says "
            f"{meta.out_channels}"
        )
    for value in (proto.graph.input[0], proto.graph.output[0]):
        if [_dims(value)[i] for i in (0, 2, 3)] != ["batch", "height", "width"]:
            raise PixelwiseError(
                f"{meta.arch}: the export fixed the shape of {value.name!r} to {_dims(value)}; "
                f"expected dynamic batch, height and width"
            )
    props = [p for p in proto.metadata_props if p.key not in (META_KEY, MULTIPLE_KEY)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(props)
    proto.metadata_props.add(key=META_KEY, value=json.dumps(meta.to_dict()))
    proto.metadata_props.add(key=MULTIPLE_KEY, value=str(multiple))
    proto.doc_string = f"pixelwise {meta.arch}: {meta.num_classes} classes ({meta.output})"
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return Path(path)


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    sample_size: Sequence[int] = (256, 320),
) -> Path:
    """Export a pixelwise checkpoint (``.ckpt``) to ONNX: :func:`export_onnx` on its model and meta."""
    source = load_model(checkpoint)
    return export_onnx(source.model, source.meta, path, opset=opset, sample_size=sample_size)


def compare_onnx(
    model: nn.Module,
    onnx_model: nn.Module,
    meta: ModelMeta,
    *,
    sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    batch: int = 1,
    seed: int = 0,
) -> list[tuple[tuple[int, int], float]]:
    """Largest absolute logit difference between ``model`` (PyTorch) and ``onnx_model`` on random
    normal inputs, one per size, both through the one inference path
    (:func:`~pixelwise.engine.checks.compare_logits`); ``model``'s train/eval mode is restored.

    Returns:
        ``[((H, W), max |Δ logit|), ...]`` in the order of ``sizes``.
    """
    was_training = model.training
    try:
        diffs = compare_logits(
            plain_segmenter(model, meta),
            plain_segmenter(onnx_model, meta),
            sizes,
            batch=batch,
            seed=seed,
        )
    finally:
        model.train(was_training)
    return [(d.size, d.max_abs) for d in diffs]


def check_onnx(
    checkpoint: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
) -> list[tuple[tuple[int, int], float]]:
    """Compare an exported file with the checkpoint it came from (ONNX Runtime on the CPU).

    Returns:
        ``[((H, W), max |Δ logit|), ...]``, one per size of ``sizes``.
    """
    source = load_model(checkpoint)
    onnx_model, _ = load_onnx(path, device="cpu")
    return compare_onnx(source.model, onnx_model, source.meta, sizes=sizes)
