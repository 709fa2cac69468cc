"""Training throughput (images per second, all processes together) with 1, 2, ... processes under
``torchrun`` (DistributedDataParallel; gloo on the CPU, NCCL on CUDA), on one recipe.

    python bench/ddp_scaling.py                                   # smoke recipe, 1 and 2 processes
    python bench/ddp_scaling.py --procs 1 2 4 --device cuda       # one GPU per process
    python bench/ddp_scaling.py --epochs 1 --max-steps 3 --repeats 1 --set augment.crop_size=[32,32]

Each run is ``torchrun --standalone --nproc-per-node N -m pixelwise train RECIPE`` with validation
off, in a fresh temporary folder. The per-process batch stays the recipe's (weak scaling: the
effective batch grows with N). Throughput is read from the run's ``metrics.csv``: the images of the
last epoch (over every process) divided by its training seconds; the first epoch, which pays for
process start-up and warm-up, is left out when there are two or more. On the CPU each process gets
``--threads`` intra-op threads (default: the machine's cores divided by N), so every run uses the
same cores. The markdown table goes to stdout; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(
    procs: int,
    recipe: Path,
    *,
    device: str,
    epochs: int,
    max_steps: int | None,
    threads: int,
    workers: int,
    overrides: list[str],
    timeout: float,
) -> dict:
    """One training run of ``procs`` processes; its last epoch's throughput and the manifest."""
    with tempfile.TemporaryDirectory(prefix="ddp_scaling_") as tmp:
        out = Path(tmp) / "run"
        sets = [
            f"train.epochs={epochs}",
            f"train.max_steps={'null' if max_steps is None else max_steps}",
            f"train.device={device}",
            f"train.num_workers={workers}",
            "data.val_split=null",
            *overrides,
        ]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(procs),
            "-m",
            "pixelwise",
            "train",
            str(recipe),
            "--out",
            str(out),
            "--quiet",
            *(a for s in sets for a in ("--set", s)),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(
                f"{procs} process(es) failed (exit {r.returncode}):\n{r.stderr[-3000:]}"
            )
        with open(out / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        manifest = json.loads((out / "manifest.json").read_text())
    last = rows[-1]
    return {
        "images_per_second": float(last["train_images_per_second"]),
        "epoch_seconds": float(last["epoch_seconds"]),
        "epoch_measured": int(last["epoch"]),
        "steps": int(last["step"]),
        "wall_seconds": round(wall, 2),
        "effective_batch_size": manifest["effective_batch_size"],
        "per_process_batch_size": manifest["per_process_batch_size"],
        "backend": manifest["distributed_backend"],
        "device": manifest["device"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "configs" / "smoke.yaml")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU each)")
    ap.add_argument("--epochs", type=int, default=2, help="the last one is measured")
    ap.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps")
    ap.add_argument("--threads", type=int, default=None, help="per process [cores / N]")
    ap.add_argument("--workers", type=int, default=0, help="data-loading workers per process")
    ap.add_argument("--repeats", type=int, default=3, help="runs per N; the median is reported")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    cores = os.cpu_count() or 1
    results = []
    for n in args.procs:
        threads = args.threads or max(1, cores // n)
        runs = [
            run_once(
                n,
                args.recipe,
                device=args.device,
                epochs=args.epochs,
                max_steps=args.max_steps,
                threads=threads,
                workers=args.workers,
                overrides=args.overrides,
                timeout=args.timeout,
            )
            for _ in range(args.repeats)
        ]
        ips = [r["images_per_second"] for r in runs]
        results.append(
            {
                **runs[-1],
                "processes": n,
                "threads_per_process": threads,
                "images_per_second": statistics.median(ips),
                "images_per_second_runs": ips,
            }
        )
        print(f"{n} process(es): {statistics.median(ips):.1f} img/s ({ips})", file=sys.stderr)

    import torch

    base = min(results, key=lambda r: r["processes"])  # speed-up relative to the fewest processes
    print(
        f"recipe {args.recipe.name}, {args.device}, epoch {results[0]['epoch_measured']} of "
        f"{args.epochs} measured, median of {args.repeats}; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {cores} cores\n"
    )
    print(
        "| processes | threads each | batch per process | effective batch | images/s | "
        "speed-up | efficiency |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        speedup = r["images_per_second"] / base["images_per_second"]
        ideal = r["processes"] / base["processes"]
        print(
            f"| {r['processes']} | {r['threads_per_process']} | {r['per_process_batch_size']} | "
            f"{r['effective_batch_size']} | {r['images_per_second']:.1f} | {speedup:.2f}× | "
            f"{100 * speedup / ideal:.0f}% |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
