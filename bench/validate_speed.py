"""How fast ``pixelwise data validate`` checks a large folder: a synthetic dataset of N small images
(by default 64×64 RGB PNG + index-mask PNG; ``--size``/``--ext`` for larger photo-like JPEGs; made
once, in ``--root``), checked with every image decoded (what
training checks) and with image headers only (PNG chunk CRCs checked, pixels not decoded), over a
range of reader threads. Masks are always decoded.

    nice -n 19 python bench/validate_speed.py --n 10000 --root /tmp/validate_speed

Prints one line per setting: wall seconds, CPU seconds (user + system of this process) and
images/second (by wall time). Wall time depends on what else the machine runs; say so with the figures.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixelwise.data import DatasetSpec, check_split


def _make(root: Path, n: int, size: int, ext: str) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    have = len(list((root / "masks").glob("*.png")))
    rng = np.random.default_rng(0)
    h, w = size * 3 // 4 if size > 64 else size, size
    ramp = np.add.outer(np.arange(h), np.arange(w)).astype(np.float32)
    for i in range(have, n):
        if size > 64:  # photo-like: smooth with a little noise (random noise would not compress)
            img = (ramp * (i % 7 + 1) % 256)[..., None] + rng.normal(0, 8, (h, w, 3))
            img = img.clip(0, 255).astype(np.uint8)
        else:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        m = np.zeros((h, w), np.uint8)
        m[: rng.integers(1, h)] = rng.integers(1, 4)
        Image.fromarray(img).save(root / "images" / f"{i:05d}.{ext}", quality=90)
        Image.fromarray(m).save(root / "masks" / f"{i:05d}.png")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--root", type=Path, default=Path("/tmp/validate_speed"))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--size", type=int, default=64, help="image width (height 3/4 of it above 64)")
    ap.add_argument("--ext", choices=["png", "jpg"], default="png", help="image file type")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per setting")
    args = ap.parse_args()
    _make(args.root, args.n, args.size, args.ext)
    spec = DatasetSpec(
        name="synthetic",
        root=args.root,
        classes=[{"name": f"c{i}"} for i in range(4)],
        mask={"encoding": "index"},
        splits={"all": {"images": "images", "masks": "masks", "stems": None}},
        source=str(args.root),
    )
    spec.splits["all"].stems = [f"{i:05d}" for i in range(args.n)]
    print(f"{args.n} {args.ext} images {args.size} px wide (+ PNG masks) in {args.root}")
    for decode in (True, False):
        for workers in args.workers:
            best = None
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), _cpu()
                rep = check_split(spec, "all", workers=workers, decode_images=decode)
                wall, cpu = time.perf_counter() - t0, _cpu() - c0
                if rep.problems or rep.num_images != args.n:
                    raise SystemExit(f"unexpected problems: {rep.problems[:3]}")
                if best is None or wall < best[0]:
                    best = (wall, cpu)
            wall, cpu = best
            mode = "decode images" if decode else "headers only"
            print(
                f"{mode:14s} workers={workers}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, "
                f"{args.n / wall:7.0f} images/s"
            )


if __name__ == "__main__":
    main()
