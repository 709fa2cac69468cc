"""Model bundles: a trained model as two plain files that ship inside a package and load offline.

``<name>.safetensors`` holds the state dict (floating tensors in float16 or float32; integer buffers
such as BatchNorm's ``num_batches_tracked`` kept as they are) and is read with
``safetensors.torch.load_file`` — never unpickled. ``<name>.json`` holds everything else::

    {"format": "pixelwise.bundle/1", "name": "camvid", "weights": "camvid.safetensors",
     "sha256": "<of the weights file>", "dtype": "float16", "input_size": [360, 480],
     "parameters": 7763083, "pixelwise_version": "0.1.0",
     "meta": {<ModelMeta: arch, num_classes, class_names, colors, mean, std, model_kwargs, ...>},
     "extra": {<free provenance: test mIoU, recipe, licence of the encoder weights, ...>},
     "inference": {"amp": "bf16", "check": {"data": "camvid", "split": "test", "images": 233,
                   "miou_float32": 0.6891, "miou_amp": 0.6891}}}

``sha256`` is required (64 hex digits) and always checked before the weights are read; the ``meta``
is checked as a checkpoint's is (:class:`ModelMeta`, :func:`build_model`): nothing is built before
the architecture's arguments, its size and every weight's shape are known to fit.
``input_size`` (H, W) is the size the model was trained and evaluated at. Loading casts the weights back
to float32, so a float16 bundle predicts in float32 with weights rounded to float16 (relative error
below 2⁻¹¹). The optional ``inference`` block records a reduced precision the model was *checked* to
score the same under (``pixelwise bundle --amp bf16 --check-data DATA``: mIoU on a labelled split within
0.1 point of float32); loaders given ``amp="model"`` (the default) use it where the hardware runs
bfloat16 natively (:func:`checked_amp`) and float32 elsewhere. Bundles in :mod:`pixelwise.pretrained` are loaded by name: ``pixelwise.load("camvid")``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from .. import __version__
from .._atomic import write_bytes_atomic, write_text_atomic
from ..errors import PixelwiseError, first_line
from ..pretrained import is_bundle_name, resolve_model
from .checkpoint import ModelMeta, build_model, sha256_file
from .runtime import resolve_amp

__all__ = [
    "AMP_TOLERANCE",
    "BUNDLE_SUFFIXES",
    "DTYPES",
    "FORMAT",
    "bundle_info",
    "checked_amp",
    "is_bundle_path",
    "read_bundle",
    "record_inference",
    "write_bundle",
]

FORMAT = "pixelwise.bundle/1"
DTYPES = ("float16", "float32")
BUNDLE_SUFFIXES = (".json", ".safetensors")

_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
# Reduced precisions a bundle may record for inference, and the largest mIoU loss (a fraction) its
# check accepts against float32.
INFERENCE_AMPS = {"bf16": torch.bfloat16}
AMP_TOLERANCE = 0.001
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def is_bundle_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names one of a bundle's two files (``.json`` or ``.safetensors``)."""
    return Path(path).suffix.lower() in BUNDLE_SUFFIXES


def _source(source: Any) -> tuple[nn.Module, ModelMeta]:
    """``(model, meta)`` from such a pair or a loaded model (anything with ``.model`` and ``.meta``:
    :func:`pixelwise.engine.loading.load_model` reads checkpoints and bundles)."""
    pair = (source.model, source.meta) if hasattr(source, "meta") else source
    if (
        not isinstance(pair, tuple)
        or len(pair) != 2
        or not isinstance(pair[0], nn.Module)
        or not isinstance(pair[1], ModelMeta)
    ):
        raise PixelwiseError(
            "write_bundle: expected a (model, ModelMeta) pair or a loaded model "
            "(pixelwise.engine.loading.load_model)"
        )
    if type(pair[0]).__name__ == "OnnxModule":
        raise PixelwiseError("an ONNX model cannot be bundled; give its .ckpt checkpoint")
    return pair


def _cast(state_dict: dict[str, Any], dtype: str) -> dict[str, torch.Tensor]:
    """CPU copies of the tensors, floating ones cast to ``dtype`` (each with its own storage:
    safetensors refuses shared ones)."""
    target = _TORCH_DTYPES[dtype]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise PixelwiseError(
                f"state dict entry {key!r} is not a tensor ({type(value).__name__})"
            )
        t = value.detach().to("cpu")
        if t.is_floating_point():
            cast = t.to(target)
            if not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(t).all()):
                big = float(t.abs().max())
                raise PixelwiseError(
                    f"weight {key!r} holds values up to {big:.3g}, beyond {dtype}'s range; "
                    "bundle with --dtype float32"
                )
            t = cast
        out[key] = t.contiguous().clone()
    return out


def write_bundle(
    source: tuple[nn.Module, ModelMeta] | Any,
    out_dir: str | os.PathLike[str],
    name: str,
    *,
    dtype: str = "float16",
    input_size: tuple[int, int] = (360, 480),
    extra: dict[str, Any] | None = None,
    inference: dict[str, Any] | None = None,
) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json`` into ``out_dir``, atomically (the weights
    first: a bundle is listed once its ``.json`` exists). Existing files of that name are replaced.

    Args:
        source: a ``(model, meta)`` pair, or a loaded model (``load_model("x.ckpt")``; a bundle, to
            re-bundle it).
        out_dir: the folder (created); :func:`pixelwise.pretrained.pretrained_dir` ships them.
        name: the bundle's name: letters, digits, ``_`` and ``-``.
        dtype: ``float16`` (half the size) or ``float32`` (exact) for the floating tensors.
        input_size: (H, W) the model was trained and evaluated at.
        extra: free JSON-serialisable information (test scores, recipe, licences).
        inference: ``{"amp": "bf16", "check": {...}}``: a reduced precision the model was checked
            to score the same under (``check``: where and what it scored), used by loaders given
            ``amp="model"``; ``None``: float32.

    Returns:
        The path of ``<name>.json``.
    """
    if not is_bundle_name(name):
        raise PixelwiseError(
            f"bundle name {name!r}: use letters, digits, '_' and '-' only (it is also a file name)"
        )
    if dtype not in DTYPES:
        raise PixelwiseError(f"bundle dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    size = tuple(input_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise PixelwiseError(f"input size {input_size!r}: expected two positive integers (H, W)")
    model, meta = _source(source)
    tensors = _cast(model.state_dict(), dtype)
    info: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "weights": f"{name}.safetensors",
        "sha256": "",
        "dtype": dtype,
        "input_size": list(size),
        "parameters": sum(p.numel() for p in model.parameters()),
        "pixelwise_version": __version__,
        "meta": meta.to_dict(),
        "extra": dict(extra or {}),
    }
    if inference is not None:
        info["inference"] = _checked_inference(inference, f"bundle {name!r}")
    try:
        json.dumps({k: info.get(k) for k in ("extra", "inference")}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PixelwiseError(f"bundle extra information is not plain JSON ({exc})") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / info["weights"]
    write_bytes_atomic(
        weights, save_safetensors(tensors, metadata={"format": FORMAT, "name": name})
    )
    info["sha256"] = sha256_file(weights)
    path = out / f"{name}.json"
    write_text_atomic(path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return path


def _json_path(path_or_name: str | os.PathLike[str]) -> Path:
    p = resolve_model(path_or_name)
    suffix = p.suffix.lower()
    if suffix == ".json":
        return p
    if suffix == ".safetensors":
        return p.with_suffix(".json")
    raise PixelwiseError(
        f"{p}: not a model bundle (expected NAME.json beside NAME.safetensors, or a bundled name)"
    )


def bundle_info(path_or_name: str | os.PathLike[str]) -> dict[str, Any]:
    """A bundle's description (its ``.json``) without loading the weights, checked; with ``path``
    (the ``.json``) and ``weights_path`` added.

    Raises:
        PixelwiseError: a missing or malformed description (a ``sha256`` that is not 64 hex
            digits included).
    """
    path = _json_path(path_or_name)
    if not path.is_file():
        raise PixelwiseError(
            f"{path}: bundle description not found (a bundle is NAME.safetensors + NAME.json)"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PixelwiseError(f"{path}: not a readable bundle description ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise PixelwiseError(f"{path}: not a pixelwise bundle (expected format {FORMAT})")
    weights = info.get("weights")
    if not isinstance(weights, str) or Path(weights).name != weights or not weights:
        raise PixelwiseError(f"{path}: 'weights' must name a file beside it, got {weights!r}")
    digest = info.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise PixelwiseError(
            f"{path}: 'sha256' must be the SHA-256 of {weights} (64 hex digits), got {digest!r:.80}"
        )
    if not isinstance(info.get("meta"), dict):
        raise PixelwiseError(f"{path}: 'meta' (the model's description) is missing")
    if "inference" in info:
        _checked_inference(info["inference"], str(path))
    return {**info, "path": str(path), "weights_path": str(path.parent / weights)}


def record_inference(path_or_name: str | os.PathLike[str], inference: dict[str, Any]) -> Path:
    """Add (or replace) the ``inference`` block of an existing bundle's description, atomically; the
    weights file is left as it is. Returns the ``.json`` path."""
    info = bundle_info(path_or_name)
    path = Path(info.pop("path"))
    info.pop("weights_path")
    info["inference"] = _checked_inference(inference, str(path))
    write_text_atomic(path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return path


def _checked_inference(inference: Any, where: str) -> dict[str, Any]:
    if not isinstance(inference, dict) or inference.get("amp") not in INFERENCE_AMPS:
        amp = inference.get("amp") if isinstance(inference, dict) else inference
        raise PixelwiseError(
            f"{where}: inference amp {amp!r} is not one a bundle records "
            f"(expected {', '.join(INFERENCE_AMPS)})"
        )
    if not isinstance(inference.get("check"), dict):
        raise PixelwiseError(
            f"{where}: inference amp {inference['amp']!r} without the check that justifies it"
        )
    if "crf" in inference:  # the dense CRF's parameters, optional
        from ..crf import CRFParams

        try:
            CRFParams(**inference["crf"])
        except (TypeError, PixelwiseError) as exc:
            raise PixelwiseError(f"{where}: inference crf: {first_line(exc)}") from None
    return dict(inference)


def checked_amp(amp: str | None, device: torch.device) -> str:
    """The ``amp`` a model runs under when its user asks for the model's own (``amp="model"``):
    ``amp``, the reduced precision its bundle records as checked (the ``inference`` block's
    ``amp``; ``None`` for anything that is not such a bundle), where ``device`` runs it natively
    (what ``amp="auto"`` would pick there: CPUs with AVX512-BF16 or AMX, CUDA GPUs with
    bfloat16); ``off`` (float32) otherwise."""
    if amp in INFERENCE_AMPS and resolve_amp("auto", device) == INFERENCE_AMPS[amp]:
        return amp
    return "off"


def read_bundle(
    path_or_name: str | os.PathLike[str],
) -> tuple[nn.Module, ModelMeta, dict[str, Any]]:
    """Load a bundle: ``(model in eval mode, float32 weights; its ModelMeta; the description)``.

    Args:
        path_or_name: ``NAME.json``, ``NAME.safetensors``, or a bundled model's name.

    Raises:
        PixelwiseError: missing files, a missing or mismatching checksum, a file that is not
            safetensors, unusable metadata, or weights that do not fit the architecture — one
            line each.
    """
    info = bundle_info(path_or_name)
    where = info["path"]
    meta = ModelMeta.from_dict(info["meta"], where=where)
    weights = Path(info["weights_path"])
    if not weights.is_file():
        raise PixelwiseError(f"{weights}: bundle weights not found (described by {where})")
    if sha256_file(weights) != info["sha256"].lower():  # always: bundle_info requires one
        raise PixelwiseError(
            f"{weights}: checksum does not match {Path(where).name} (a corrupt or replaced file)"
        )
    try:
        tensors = load_file(str(weights), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types on garbage
        raise PixelwiseError(
            f"{weights}: not a readable safetensors file ({first_line(exc)[:200]})"
        ) from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return build_model(meta, state, where=str(weights)).eval(), meta, info
