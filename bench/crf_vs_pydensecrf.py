"""pixelwise's dense CRF against pydensecrf (Krähenbühl's C++ code), side by side in one process.

    pip install 'pixelwise[bench]'        # pydensecrf2 (compiles its C++ extension)
    python bench/crf_vs_pydensecrf.py [--repeats 9] [--classes 12 21] [--iterations 5 10]

Same CamVid test frame (480×360), same unary, same parameters: Gaussian kernel sxy 3, weight
("compat") 3; bilateral kernel sxy 80, srgb 13, weight 10; Potts compatibility. The unary is
``-log_softmax`` of deterministic logits shaped like a coarse network output: the frame's annotation
(11 classes, void as class 11; classes beyond get only noise) one-hot, averaged over 8×8 blocks,
upsampled bilinearly, times 4, plus unit Gaussian noise (seed 0).

Each timed call is the whole refinement from unary and image to probabilities: building both
kernels' lattices and running the mean-field iterations (pydensecrf: ``DenseCRF2D``, ``setUnaryEnergy``,
``addPairwiseGaussian``, ``addPairwiseBilateral``, ``inference``; pixelwise: ``DenseCRF(params)(image,
logits=...)``, which also converts the C×H×W logits and returns C×H×W probabilities and labels).
The two alternate call by call after one untimed warm-up each (pixelwise's first call loads or
compiles its numba kernels; that one-off time is reported separately); times are medians. Both run on
one thread. Agreement: the share of pixels whose labels are equal; max |ΔQ|: the largest difference
of probabilities.

Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timing import interleaved_medians, timed

from pixelwise.crf import CRFParams, DenseCRF

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def unary_logits(annotation: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    """Coarse, noisy C×H×W float32 logits from an annotation (see the module docstring)."""
    h, w = annotation.shape
    labels = torch.from_numpy(np.minimum(annotation, num_classes - 1).astype(np.int64))
    onehot = F.one_hot(labels, num_classes).permute(2, 0, 1)[None].float()
    coarse = F.avg_pool2d(onehot, 8, ceil_mode=True)
    up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    noise = np.random.default_rng(seed).normal(size=up.shape).astype(np.float32)
    return (4.0 * up + noise).astype(np.float32)


def run_pydensecrf(image: np.ndarray, unary: np.ndarray, p: CRFParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    c, h, w = unary.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(unary.reshape(c, -1))
    d.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_weight)
    d.addPairwiseBilateral(
        sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=image, compat=p.bilateral_weight
    )
    return np.array(d.inference(p.iterations)).reshape(c, h, w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[12, 21])
    ap.add_argument("--iterations", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--repeats", type=int, default=9, help="timed calls of each, alternating")
    ap.add_argument("--frame", default=None, help="CamVid test frame [default: the first]")
    args = ap.parse_args()
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        raise SystemExit("pydensecrf is not installed: pip install 'pixelwise[bench]'") from None

    torch.set_num_threads(1)
    name = args.frame or sorted((CAMVID / "test").iterdir())[0].name
    image = np.array(Image.open(CAMVID / "test" / name).convert("RGB"))  # writable: pydensecrf
    annotation = np.asarray(Image.open(CAMVID / "testannot" / name))

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; CamVid test/{name} ({image.shape[1]}×{image.shape[0]}); "
          f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load}; torch {torch.__version__}; "
          f"{args.repeats} timed calls each, medians\n")  # fmt: skip
    print(
        "| classes | iterations | pydensecrf (ms) | pixelwise (ms) | ratio | label agreement | max abs ΔQ |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    first_call = None
    for c in args.classes:
        logits = unary_logits(annotation, c)
        unary = np.ascontiguousarray(-torch.log_softmax(torch.from_numpy(logits), 0).numpy())
        for it in args.iterations:
            p = CRFParams(
                iterations=it,
                gaussian_sxy=3,
                gaussian_weight=3,
                bilateral_sxy=80,
                bilateral_srgb=13,
                bilateral_weight=10,
            )
            crf = DenseCRF(p)
            first: list[float] = []
            with timed(first):
                out = crf(image, logits=logits)  # warm-up: loads (or compiles) the numba kernels
            first_call = first_call or first[0]
            ref = run_pydensecrf(image, unary, p)
            a, b = interleaved_medians(
                partial(run_pydensecrf, image, unary, p),
                partial(crf, image, logits=logits),
                repeats=args.repeats,
                warmup=0,
            )
            agree = float((out.labels == ref.argmax(0)).mean())
            diff = float(np.abs(out.probs - ref).max())
            print(f"| {c} | {it} | {1e3 * a:.0f} | {1e3 * b:.0f} | {b / a:.2f} | "
                  f"{100 * agree:.3f}% | {diff:.1e} |")  # fmt: skip
    print(f"\npixelwise's first call in this process (kernels loaded from numba's cache, or compiled): "
          f"{first_call:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
