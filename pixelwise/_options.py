"""Command-line options shared by :mod:`pixelwise.cli` and :mod:`pixelwise.serve.cli` (typer and the
standard library only: importing it loads no PyTorch)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["AmpOption", "DeviceOption"]

DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda[:N].")]
AmpOption = Annotated[
    str,
    typer.Option(
        help="Autocast for the forward pass: model (the precision a bundle records as checked, "
        "bf16 for the bundled camvid, where the CPU/GPU runs it natively; float32 otherwise and "
        "for checkpoints), off (float32), bf16, fp16 (CUDA) or auto (bf16/fp16 wherever native). "
        "bf16 halves the bundled camvid model's time on CPUs with AVX-512 BF16 at the same test "
        "mIoU (docs/models/camvid.md)."
    ),
]
