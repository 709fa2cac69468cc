"""Device and mixed-precision selection."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import PixelwiseError

__all__ = ["AMP_CHOICES", "resolve_device", "resolve_amp", "autocast"]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise PixelwiseError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PixelwiseError(f"device {device!r} requested but CUDA is not available")
    return dev


AMP_CHOICES = ("model", "auto", "off", "bf16", "fp16")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (one of :data:`AMP_CHOICES`) on ``device``, or None (float32).

    ``auto``: bfloat16 on CUDA GPUs that support it, float16 on older ones; bfloat16 on CPUs with native
    bf16 instructions (AVX512-BF16 or AMX); float32 otherwise. ``model``: the setting a model bundle
    records as checked (resolved by the loader, :func:`pixelwise.engine.bundle.checked_amp`); a bare
    model records none, so here it means float32.
    """
    if amp in ("off", "model"):
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise PixelwiseError("amp 'fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
        return torch.float16
    if amp != "auto":
        raise PixelwiseError(f"unknown amp {amp!r}; use {', '.join(AMP_CHOICES)}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        cpu = torch.cpu
        native = (
            getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
            or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        )
        return torch.bfloat16 if native else None
    return None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` when ``dtype`` is set, else nothing."""
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
