"""The inference engine measured: ONNX export parity and speed for every architecture, and the peak
memory of sliding-window prediction on a huge image.

    python bench/inference_bench.py                        # both parts, markdown on stdout
    python bench/inference_bench.py --parts onnx --archs fcn8s unet
    python bench/inference_bench.py --parts memory --memory-sizes 2048 4096 8192 --classes 12

*onnx* — every registered architecture as its CamVid recipe builds it (``configs/camvid_<arch>.yaml``:
EfficientNet-Lite0 encoder where the architecture takes one, random initialisation, 11 classes; the
FCN score layers are randomised too, since they start at zero), exported by ``pixelwise export``'s
function (dynamic batch, height, width) at 256×320, then run by ONNX Runtime (CPU) and PyTorch (eval,
float32) on two sizes: 360×480 (CamVid) and 97×131 (odd). The table gives the largest absolute logit
difference, the largest logit (for scale), and the median time of ``--repeats`` batch-1 forwards at
360×480 for each runtime after one warm-up (PyTorch in channels_last, as the Segmenter runs it).

*memory* — in a fresh process (one thread), the labels of an ``--memory-size``² RGB image with
``--classes`` classes through :func:`pixelwise.engine.tiling.slide_labels` (a per-pixel 1×1 conv
model, 512-pixel windows, overlap 0.25, Gaussian blending): peak resident memory
(``VmHWM``; not ``ru_maxrss``, which Linux carries over an exec from the parent) before and after,
and the time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from timing import median_seconds, report_head

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 11
# the architectures with a CamVid recipe, configs/camvid_<arch>.yaml
RECIPES = sorted(p.stem.removeprefix("camvid_") for p in (ROOT / "configs").glob("camvid_*.yaml"))

_MEMORY_CHILD = r"""
import sys, time
import numpy as np, torch
from torch import nn
torch.set_num_threads(1)
from pixelwise.engine.tiling import TileConfig, slide_labels
size, classes = int(sys.argv[1]), int(sys.argv[2])
image = np.frombuffer(np.random.default_rng(0).bytes(size * size * 3), np.uint8)
image = image.reshape(size, size, 3)
model = nn.Conv2d(3, classes, 1).eval()
def pre(w):
    return torch.from_numpy(np.ascontiguousarray(w)).permute(2, 0, 1).float() / 255.0
@torch.no_grad()
def logits(x):
    return model(x)
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))
before = hwm()
t = time.perf_counter()
labels = slide_labels(image, pre, logits, classes, TileConfig(mode="slide", window=512),
                      lambda b: b.argmax(0))
seconds = time.perf_counter() - t
peak = hwm()
print(before / 1024, peak / 1024, seconds, labels.shape[0], labels.shape[1])
"""


def _memory_row(size: int, classes: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(size), str(classes)],
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    ).stdout.split()
    before, peak, seconds = float(out[0]), float(out[1]), float(out[2])
    full = classes * size * size * 4 / 2**20
    mpix = size * size / 1e6
    return (
        f"| {size}×{size} | {size * size * 3 / 2**20:.0f} | {before:.0f} | {peak:.0f} | "
        f"{peak - before:.0f} | {full:.0f} | {seconds:.1f} | {1000 * seconds / mpix:.0f} |"
    )


def _memory(sizes: list[int], classes: int) -> list[str]:
    return [
        "## Sliding-window memory",
        "",
        f"RGB images, {classes} classes, 512-pixel windows, overlap 0.25, Gaussian blending, a per-pixel "
        "model (1×1 conv), one thread, each size in a fresh process:",
        "",
        "| image | image MiB | peak RSS before prediction (MiB) | peak RSS after (MiB) | added (MiB) "
        "| whole-image float32 logits would be (MiB) | seconds | ms per megapixel |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_memory_row(size, classes) for size in sizes),
        "",
        "The memory before prediction is the interpreter, PyTorch, pixelwise and the image itself.",
        "",
    ]


def recipe_model(arch: str) -> tuple[torch.nn.Module, object]:
    """The ``configs/camvid_<arch>.yaml`` model, randomly initialised (seed 0), and its ModelMeta."""
    import pixelwise as pw
    from pixelwise.engine.checkpoint import ModelMeta

    cfg = pw.load_config(ROOT / "configs" / f"camvid_{arch}.yaml")
    params = {k: v for k, v in cfg.model.params.items() if k != "encoder_weights"}
    torch.manual_seed(0)
    model = pw.create_model(cfg.model.name, num_classes=NUM_CLASSES, **params).eval()
    meta = ModelMeta(
        arch=cfg.model.name,
        num_classes=NUM_CLASSES,
        in_channels=3,
        class_names=[f"c{i}" for i in range(NUM_CLASSES)],
        colors=[[i, i, i] for i in range(NUM_CLASSES)],
        mean=[0.5] * 3,
        std=[0.5] * 3,
        model_kwargs=params,
    )
    return model, meta


def _randomise_zero_layers(model: torch.nn.Module) -> None:
    """FCN's score layers start at zero (as the paper's); give every all-zero weight random values
    so the comparison is not between two zero tensors."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def _onnx(archs: list[str], repeats: int) -> list[str]:
    from pixelwise.engine.export import compare_onnx, export_onnx
    from pixelwise.engine.onnx_model import load_onnx

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            model, meta = recipe_model(arch)
            _randomise_zero_layers(model)
            path = Path(tmp) / f"{arch}.onnx"
            t = time.perf_counter()
            export_onnx(model, meta, path, sample_size=(256, 320))
            export_s = time.perf_counter() - t
            onnx_model, _ = load_onnx(path, device="cpu")
            diffs = compare_onnx(model, onnx_model, meta, sizes=((360, 480), (97, 131)))
            x = torch.randn(1, 3, 360, 480)
            with torch.no_grad():
                scale = float(model(x).abs().max())
                cl = model.to(memory_format=torch.channels_last)
                xc = x.contiguous(memory_format=torch.channels_last)
                torch_ms = 1000 * median_seconds(lambda: cl(xc), repeats)  # noqa: B023
                ort_ms = 1000 * median_seconds(lambda: onnx_model(x), repeats)  # noqa: B023
            rows.append(
                f"| {arch} | {diffs[0][1]:.1e} | {diffs[1][1]:.1e} | {scale:.2f} | "
                f"{path.stat().st_size / 2**20:.1f} | {export_s:.0f} | {torch_ms:.1f} | "
                f"{ort_ms:.1f} | {torch_ms / ort_ms:.2f} |"
            )
            print(f"  {arch}: done", file=sys.stderr, flush=True)
    return [
        "## ONNX parity",
        "",
        "Recipe models (`configs/camvid_<arch>.yaml`, random initialisation, 11 classes), exported at "
        "256×320 with dynamic batch/height/width, compared on random normal inputs; times are the "
        f"median of {repeats} batch-1 forwards at 360×480 on the CPU.",
        "",
        "| recipe | max abs Δ logit 360×480 | max abs Δ logit 97×131 | max abs logit | ONNX MiB | "
        "export s | PyTorch ms | ONNX Runtime ms | PyTorch / ORT |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=["onnx", "memory"], choices=["onnx", "memory"])
    ap.add_argument("--archs", nargs="+", default=RECIPES, choices=RECIPES)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memory-sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--classes", type=int, default=12)
    args = ap.parse_args(argv)
    versions = []
    if "onnx" in args.parts:
        import onnxruntime

        versions.append(f"onnxruntime {onnxruntime.__version__}")
    lines = report_head("Inference engine", __file__, argv, *versions)
    if "onnx" in args.parts:
        lines += [""] + _onnx(args.archs, args.repeats)
    if "memory" in args.parts:
        lines += _memory(args.memory_sizes, args.classes)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
