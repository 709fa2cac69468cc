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

``input_size`` (H, W) is the size the model was trained and evaluated at. Loading casts the weights back
to float32, so a float16 bundle predicts in float32 with weights rounded to float16 (relative error
below 2⁻¹¹). The optional ``inference`` block records a reduced precision the model was *checked* to
score the same under (``pixelwise bundle --amp bf16 --check-data DATA``: mIoU on a labelled split within
0.1 point of float32); loaders given ``amp="model"`` (the default) use it where the hardware runs
bfloat16 natively (:func:`checked_amp`) and float32 elsewhere. Bundles in :mod:`pixelwise.pretrained` are loaded by name: ``pixelwise.load("camvid")``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from .. import __version__, outputs
from .._atomic import write_bytes_atomic, write_text_atomic
from ..errors import PixelwiseError
from ..pretrained import bundled_path, is_bundle_name
from .checkpoint import ModelMeta, build_model, load_checkpoint
from .runtime import resolve_amp

if TYPE_CHECKING:
    from ..data.spec import DatasetSpec

__all__ = [
    "AMP_TOLERANCE",
    "BUNDLE_SUFFIXES",
    "DTYPES",
    "FORMAT",
    "bundle_info",
    "check_amp",
    "checked_amp",
    "compare_models",
    "is_bundle_path",
    "read_bundle",
    "record_inference",
    "resolve_model",
    "source_model",
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


def resolve_model(path: str | os.PathLike[str]) -> Path:
    """Where a ``--model`` value points: an existing file wins; otherwise a bare name (``camvid``)
    is a bundled model's ``.json`` (:func:`pixelwise.pretrained.bundled_path`); anything else is
    returned as a path, for its loader to report as missing.

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


def is_bundle_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names one of a bundle's two files (``.json`` or ``.safetensors``)."""
    return Path(path).suffix.lower() in BUNDLE_SUFFIXES


def source_model(
    source: str | os.PathLike[str] | tuple[nn.Module, ModelMeta],
) -> tuple[nn.Module, ModelMeta]:
    """A ``(model, meta)`` pair from a checkpoint (``.ckpt``), a bundle (a file or a bundled name),
    or the pair itself."""
    if isinstance(source, tuple):
        model, meta = source
        if not isinstance(model, nn.Module) or not isinstance(meta, ModelMeta):
            raise PixelwiseError(
                "write_bundle: expected a checkpoint path or a (model, ModelMeta) pair"
            )
        return model, meta
    path = resolve_model(source)
    if path.suffix.lower() == ".onnx":
        raise PixelwiseError(f"{path}: an ONNX model cannot be bundled; give its .ckpt checkpoint")
    if is_bundle_path(path):
        model, meta, _ = read_bundle(path)
        return model, meta
    ckpt = load_checkpoint(path)
    meta = ModelMeta.from_dict(ckpt.get("meta", {}), where=str(path))
    if not isinstance(ckpt.get("model"), dict):
        raise PixelwiseError(f"{path}: checkpoint holds no model weights")
    return build_model(meta, ckpt["model"]), meta


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bundle(
    source: str | os.PathLike[str] | tuple[nn.Module, ModelMeta],
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
        source: a checkpoint (``.ckpt``; or a bundle, to re-bundle it) or a ``(model, meta)`` pair.
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
    model, meta = source_model(source)
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
    info["sha256"] = _sha256(weights)
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
        PixelwiseError: a missing or malformed description.
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
    return dict(inference)


def checked_amp(info: dict[str, Any] | None, device: torch.device) -> str:
    """The ``amp`` a model runs under when its user asks for the model's own (``amp="model"``):
    the reduced precision its bundle description ``info`` records as checked, where ``device`` runs
    it natively (what ``amp="auto"`` would pick there: CPUs with AVX512-BF16 or AMX, CUDA GPUs with
    bfloat16); ``off`` (float32) otherwise, and for anything that is not a bundle (``info=None``)."""
    amp = ((info or {}).get("inference") or {}).get("amp")
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
        PixelwiseError: missing files, a checksum mismatch, a file that is not safetensors, or
            weights that do not fit the architecture — one line each.
    """
    info = bundle_info(path_or_name)
    where = info["path"]
    meta = ModelMeta.from_dict(info["meta"], where=where)
    weights = Path(info["weights_path"])
    if not weights.is_file():
        raise PixelwiseError(f"{weights}: bundle weights not found (described by {where})")
    if info.get("sha256") and _sha256(weights) != info["sha256"]:
        raise PixelwiseError(
            f"{weights}: checksum does not match {Path(where).name} (a corrupt or replaced file)"
        )
    try:
        tensors = load_file(str(weights), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types on garbage
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PixelwiseError(
            f"{weights}: not a readable safetensors file ({first[:200]})"
        ) from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        model = build_model(meta, state)
    except PixelwiseError as exc:
        raise PixelwiseError(f"{weights}: {exc}") from None
    return model.eval(), meta, info


def check_amp(
    bundle: str | os.PathLike[str],
    amp: str,
    spec: DatasetSpec,
    split: str = "test",
    *,
    batch_size: int = 4,
    num_workers: int = 2,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Score a bundle on a labelled split in float32 and under ``amp``: the ``check`` a bundle's
    ``inference`` block records (:func:`write_bundle`).

    Raises:
        PixelwiseError: ``amp`` is not one a bundle records, or its mIoU is more than
            :data:`AMP_TOLERANCE` (0.1 point) below float32's.
    """
    from .evaluate import evaluate
    from .predictor import Segmenter

    if amp not in INFERENCE_AMPS:
        raise PixelwiseError(f"amp {amp!r}: a bundle records only {', '.join(INFERENCE_AMPS)}")
    float32 = Segmenter.from_checkpoint(bundle, device=device, amp="off")
    reduced = Segmenter(
        float32.model, float32.meta, device=device, amp=amp, crf=float32.crf, tiling=float32.tiling
    )
    miou: dict[str, float] = {}
    images = 0
    for seg in (float32, reduced):
        result = evaluate(
            seg, spec, split, batch_size=batch_size, num_workers=num_workers, progress=progress
        )
        miou[seg.amp], images = float(result.scores.miou), result.num_images
    if miou[amp] < miou["off"] - AMP_TOLERANCE:
        raise PixelwiseError(
            f"{Path(bundle).name}: mIoU {100 * miou[amp]:.2f} under {amp} against "
            f"{100 * miou['off']:.2f} in float32 on {spec.name}/{split}, more than "
            f"{100 * AMP_TOLERANCE:.1f} point lower; keep float32 (no --amp)"
        )
    return {
        "data": spec.name,
        "split": split,
        "images": images,
        "device": str(seg.device),
        "miou_float32": round(miou["off"], 6),
        "miou_amp": round(miou[amp], 6),
    }


@torch.no_grad()
def compare_models(
    reference: nn.Module,
    other: nn.Module,
    meta: ModelMeta,
    input_size: tuple[int, int],
    *,
    seed: int = 0,
) -> tuple[float, float]:
    """Run both models on one random normalised input of ``input_size``: the largest absolute logit
    difference and the fraction of pixels whose label agrees (how much float16 weights change)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, meta.in_channels, *input_size, generator=gen)
    a = reference.eval()(x).float()
    b = other.eval()(x).float()
    agree = (outputs.labels(a, meta.threshold) == outputs.labels(b, meta.threshold)).float().mean()
    return float((a - b).abs().max()), float(agree)
