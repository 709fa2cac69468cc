"""The dense CRF on CUDA (PyTorch lattice) against the CPU path (numba), on a CamVid frame.

    python bench/crf_gpu.py [--repeats 5] [--camvid ../shared/data/camvid] [--quick]

(``--device cpu --quick`` runs the PyTorch path on the CPU: a check of this script, not a benchmark.)

For 480×360 (12 and 21 classes, 5 and 10 iterations) and for the frame upscaled to 2048×2048 with
19 classes (10 iterations): median time of the whole refinement on the GPU (tensors already there,
synchronised), the CPU path's time on all cores of this machine, label agreement and the largest
probability difference between the two, and the GPU's peak memory. Benchmark parameters as in
bench/crf_vs_pydensecrf.py (Gaussian sxy 3, w 3; bilateral sxy 80, srgb 13, w 10), and DeepLab v1's
defaults for the 2048×2048 row. Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from crf_vs_pydensecrf import unary_logits  # noqa: I001  (bench/ is the script's folder)
from PIL import Image
from timing import median_seconds

from pixelwise.crf import CRFParams, DenseCRF


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="the first case only")
    ap.add_argument(
        "--camvid", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/camvid"
    )
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    name = sorted((args.camvid / "test").iterdir())[0].name
    frame = Image.open(args.camvid / "test" / name).convert("RGB")
    annot = Image.open(args.camvid / "testannot" / name)
    bench = CRFParams(5, 3, 3, 80, 13, 10)
    cases = [((480, 360), c, replace(bench, iterations=it), "benchmark")
             for c in (12, 21) for it in (5, 10)]  # fmt: skip
    cases.append(((2048, 2048), 19, CRFParams(), "DeepLab v1 defaults"))
    if args.quick:
        cases = cases[:1]
    where = torch.cuda.get_device_name() if cuda else "CPU (PyTorch path)"
    print(f"{where}, torch {torch.__version__}; CPU column: the numba path, one thread\n")
    print("| size | classes | iterations | params | GPU (ms) | CPU (ms) | label agreement | "
          "max abs ΔQ | GPU peak memory (MiB) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, c, p, label in cases:
        image = np.array(frame.resize(size, Image.BILINEAR))
        ann = np.array(annot.resize(size, Image.NEAREST))
        logits = unary_logits(ann, c)
        crf = DenseCRF(p, backend="torch")
        img_d = torch.from_numpy(image).to(args.device)
        log_d = torch.from_numpy(logits).to(args.device)

        def on_gpu(crf=crf, img_d=img_d, log_d=log_d):  # noqa: ANN001, ANN202
            out = crf(img_d, logits=log_d)
            if cuda:
                torch.cuda.synchronize()
            return out

        on_gpu()
        peak = float("nan")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        gpu = on_gpu()  # the warm-up call of the timing below; its result is the one compared
        t_gpu = median_seconds(on_gpu, args.repeats, warmup=0)
        if cuda:
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        crf = DenseCRF(p)
        cpu = crf(image, logits=logits)
        t_cpu = median_seconds(partial(crf, image, logits=logits), max(1, args.repeats // 2), 0)
        agree = float((gpu.labels.cpu().numpy() == cpu.labels).mean())
        diff = float(np.abs(gpu.probs.cpu().numpy() - cpu.probs).max())
        print(f"| {size[0]}×{size[1]} | {c} | {p.iterations} | {label} | {1e3 * t_gpu:.1f} | "
              f"{1e3 * t_cpu:.0f} | {100 * agree:.3f}% | {diff:.1e} | {peak:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
