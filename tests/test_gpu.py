"""CUDA paths: mixed-precision training (bf16 and fp16 with loss scaling) and CPU/GPU agreement.
Skipped without a CUDA device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import _cfg, _toy_dataset  # noqa: I001  (tests/ is on sys.path)

from pixelwise.data import load_dataset_spec
from pixelwise.engine import Segmenter, evaluate, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_mixed_precision_training_learns(tmp_path: Path, amp: str) -> None:
    data = _toy_dataset(tmp_path / "data")
    res = train(_cfg(data, epochs=15, device="cuda", amp=amp), tmp_path / "run", progress=False)
    assert res.best_miou is not None and res.best_miou > 0.8


def test_cuda_and_cpu_predictions_agree(tmp_path: Path) -> None:
    data = _toy_dataset(tmp_path / "data")
    train(_cfg(data, epochs=5, device="cuda", amp="off"), tmp_path / "run", progress=False)
    spec = load_dataset_spec(data)
    ckpt = tmp_path / "run" / "best.ckpt"
    gpu = evaluate(
        Segmenter.from_checkpoint(ckpt, device="cuda"), spec, "all", num_workers=0, progress=False
    )
    cpu = evaluate(
        Segmenter.from_checkpoint(ckpt, device="cpu"), spec, "all", num_workers=0, progress=False
    )
    a, b = gpu.confusion.matrix.numpy(), cpu.confusion.matrix.numpy()
    assert a.sum() == b.sum()
    assert np.abs(a - b).sum() / 2 <= 0.001 * a.sum()  # ≥ 99.9% of pixels agree
