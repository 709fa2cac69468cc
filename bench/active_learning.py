"""Active learning on CamVid, simulated: reveal ground-truth masks in uncertainty order or in random
order, retrain at each labelling budget, score the CamVid test split.

    python bench/active_learning.py                      # the measured run (docs/active_learning.md)
    python bench/active_learning.py --smoke --seeds 0 --out runs/al_smoke   # seconds: tiny budgets

The pool is CamVid's train split (367 images), the scored split its test split (233 images at
360×480, 11 classes, void ignored, one confusion matrix through ``pixelwise.engine.evaluate``). Each
replicate (``--seeds``) starts both strategies from the same seeded random 25 images (the first 25
of one seeded permutation of the pool), so its first model is trained once and shared. At each
budget a model is trained afresh from the ImageNet-initialised encoder on the labelled images only,
with ``pixelwise.engine.train`` on the bundled CamVid recipe (``configs/models/camvid.yaml``:
DeepLab v3+ on EfficientNet-Lite0) with the same number of optimiser steps, seed and schedule at
every budget and for both strategies, on smaller crops; then it is scored on the test split at full
size. To reach the next budget:

* ``uncertainty``: the strategy's current model ranks the rest of the pool
  (:func:`pixelwise.annotate.rank_by_uncertainty`, mean normalised pixel entropy by default, whole
  360×480 images) and the most uncertain images are revealed;
* ``random``: the next images of the seeded permutation are revealed (the first *b* of it at budget
  *b*: :func:`pixelwise.annotate.random_order`).

Resumable: each replicate lives in ``--out``/``seed<k>/``. Its ``state.json`` (written atomically)
records the settings, each selection as soon as it is made and each (strategy, budget) result as
soon as it is scored; a rerun of the same command skips what is done, and a training that was
stopped resumes from its ``last.ckpt`` (written at the end of every epoch of ``--epoch-steps``
steps). A rerun with other settings is refused (choose another ``--out``). After every finished
step the figure (``docs/active_learning.png``), the results (``docs/results/active_learning.json``)
and the page (``docs/active_learning.md``) are rewritten from every replicate's state.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pixelwise._atomic import write_text_atomic  # noqa: E402
from pixelwise.annotate import random_order, rank_by_uncertainty  # noqa: E402
from pixelwise.config import load_config  # noqa: E402
from pixelwise.data import load_dataset_spec, read_mask, resolve_split  # noqa: E402
from pixelwise.engine import Segmenter, evaluate, report_dict, train  # noqa: E402

__all__ = ["STRATEGIES", "main", "parse_args"]

log = logging.getLogger("active_learning")

DATA_YAML = ROOT / "configs" / "data" / "camvid.yaml"
RECIPE = ROOT / "configs" / "models" / "camvid.yaml"
STRATEGIES = ("uncertainty", "random")
LABELS = {"uncertainty": "uncertainty (entropy)", "random": "random"}


# ---- settings and state ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--smoke`` replaces the budget with a seconds-long one."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--steps", type=int, default=160, help="optimiser steps per training")
    ap.add_argument("--epoch-steps", type=int, default=20, help="steps per epoch (checkpoints)")
    ap.add_argument("--crop", type=int, default=224, help="square training crop")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1],
        help="one replicate per seed: it seeds the starting set, the random order and training",
    )
    ap.add_argument("--kind", default="entropy", help="uncertainty: entropy, margin, ...")
    ap.add_argument("--workers", type=int, default=2, help="data-loading processes")
    ap.add_argument("--pool-limit", type=int, help="use only the first N pool images (smoke)")
    ap.add_argument("--test-limit", type=int, help="score only the first N test images (smoke)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "active_learning")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "active_learning.png")
    ap.add_argument(
        "--results", type=Path, default=ROOT / "docs" / "results" / "active_learning.json"
    )
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / "active_learning.md")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets, 2 steps, 64 px crops")
    ap.add_argument("--progress", action="store_true", help="progress bars")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.budgets, args.steps, args.epoch_steps, args.crop = [4, 6, 8], 2, 1, 64
        args.batch_size, args.pool_limit, args.test_limit, args.workers = 2, 12, 3, 0
        args.report = args.results.with_suffix(".md")  # never the measured run's page
    if sorted(set(args.budgets)) != args.budgets or args.budgets[0] < 1:
        raise SystemExit(f"--budgets must increase and be positive, got {args.budgets}")
    return args


def settings(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """What fixes one replicate's results; a rerun in the same folder must give the same."""
    return {
        "budgets": args.budgets,
        "steps": args.steps,
        "epoch_steps": args.epoch_steps,
        "crop": args.crop,
        "batch_size": args.batch_size,
        "seed": seed,
        "kind": args.kind,
        "pool_limit": args.pool_limit,
        "test_limit": args.test_limit,
        "recipe": str(RECIPE.relative_to(ROOT)),
    }


def load_state(path: Path, wanted: dict[str, Any]) -> dict[str, Any]:
    """``state.json``, or a fresh one; refuses one written with other settings."""
    if not path.is_file():
        return {"settings": wanted, "steps": {}}
    state = json.loads(path.read_text())
    if state["settings"] != wanted:
        diff = sorted(k for k in wanted if state["settings"].get(k) != wanted[k])
        raise SystemExit(
            f"{path} was written with other settings ({', '.join(diff)}); use another --out"
        )
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(state, indent=1) + "\n")


# ---- data --------------------------------------------------------------------------------------------


def camvid() -> tuple[dict[str, Any], Path]:
    """The CamVid dataset YAML as a dict, and its root as an absolute path."""
    raw = yaml.safe_load(DATA_YAML.read_text())
    return raw, (DATA_YAML.parent / raw["root"]).resolve()


def pool_and_test(limit_pool: int | None, limit_test: int | None) -> tuple[list[str], list[str]]:
    """Stems of the pool (train split) and of the scored test images, in list-file order."""
    spec = load_dataset_spec(DATA_YAML)
    pool = [s.image.stem for s in resolve_split(spec, "train")[0]]
    test = [s.image.stem for s in resolve_split(spec, "test")[0]]
    return pool[:limit_pool], test[:limit_test]


def write_data_yaml(path: Path, labelled: list[str], test: list[str]) -> Path:
    """A dataset YAML beside a run: CamVid with split ``labelled`` (the labelled stems),
    ``test`` (the scored stems) and ``test_<video>`` (those of each video)."""
    raw, root = camvid()
    raw["name"] = "camvid"
    raw["root"] = str(root)
    raw["splits"] = {
        "labelled": {"list": "train.txt", "stems": sorted(labelled)},
        "test": {"list": "test.txt", "stems": test},
        **{
            f"test_{video}": {"list": "test.txt", "stems": [t for t in test if _video(t) == video]}
            for video in sequences(test)
        },
    }
    write_text_atomic(path, yaml.safe_dump(raw, sort_keys=False))
    return path


def class_share(stems: list[str]) -> dict[str, float]:
    """Each class's share of the labelled pixels of these train images."""
    raw, root = camvid()
    names = [c["name"] for c in raw["classes"]]
    counts = np.zeros(len(names), np.int64)
    for stem in stems:
        mask = read_mask(root / "trainannot" / f"{stem}.png")
        counts += np.bincount(mask.ravel(), minlength=len(names) + 1)[: len(names)]
    return {
        n: round(float(c) / max(1, int(counts.sum())), 5)
        for n, c in zip(names, counts, strict=True)
    }


def sequences(stems: list[str]) -> dict[str, int]:
    """How many of these images come from each CamVid video (the stem's prefix)."""
    return dict(sorted(Counter(_video(s) for s in stems).items()))


def _video(stem: str) -> str:
    return stem.split("_")[0]


# ---- one budget --------------------------------------------------------------------------------------


def overrides(args: argparse.Namespace, data_yaml: Path, seed: int) -> list[str]:
    """The recipe's changes: the labelled split, no validation, the step budget, the crop."""
    epochs = math.ceil(args.steps / args.epoch_steps)
    return [
        f"data.dataset={data_yaml}",
        "data.train_split=labelled",
        "data.val_split=null",
        f"augment.crop_size=[{args.crop}, {args.crop}]",
        f"train.batch_size={args.batch_size}",
        f"train.samples_per_epoch={args.batch_size * args.epoch_steps}",
        f"train.epochs={epochs}",
        f"train.max_steps={args.steps}",
        f"schedule.warmup_iters={max(1, args.steps // 10)}",
        f"train.seed={seed}",
        f"train.num_workers={args.workers}",
        "train.device=cpu",
        "train.amp=off",
    ]


def segmenter(run_dir: Path) -> Segmenter:
    return Segmenter.from_checkpoint(run_dir / "best.ckpt", device="cpu", amp="off")


def train_and_score(
    args: argparse.Namespace, seed: int, run_dir: Path, labelled: list[str], test: list[str]
) -> dict[str, Any]:
    """Train (or resume) on ``labelled``, score ``best.ckpt`` on the test images; the result."""
    data_yaml = write_data_yaml(run_dir / "data.yaml", labelled, test)
    cfg = load_config(RECIPE, overrides(args, data_yaml, seed))
    resume = (run_dir / "last.ckpt").exists()
    log.info(
        "%s: %s on %d images", run_dir.name, "resuming" if resume else "training", len(labelled)
    )
    t0 = time.perf_counter()
    result = train(cfg, run_dir, resume=resume, progress=args.progress)
    wall = time.perf_counter() - t0
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train_seconds = sum(float(r["epoch_seconds"] or 0) for r in rows)
    t0 = time.perf_counter()
    ev = evaluate(
        segmenter(run_dir),
        load_dataset_spec(data_yaml),
        "test",
        batch_size=4,
        num_workers=args.workers,
        progress=args.progress,
    )
    rep = report_dict(ev)
    by_video = score_by_video(args, run_dir, data_yaml)
    return {
        "labelled": len(labelled),
        "miou": rep["miou"],
        "pixel_accuracy": rep["pixel_accuracy"],
        "mean_accuracy": rep["mean_accuracy"],
        "iou": {c["name"]: c["iou"] for c in rep["per_class"]},
        "test_images": rep["num_images"],
        "steps": result.steps,
        "final_train_loss": float(rows[-1]["train_loss"]) if rows else None,
        "train_seconds": round(train_seconds, 1),
        "train_wall_seconds_this_session": round(wall, 1),
        "eval_seconds": round(time.perf_counter() - t0, 1),
        "class_share": class_share(labelled),
        "sequences": sequences(labelled),
        "run_dir": str(run_dir),
        "test_by_video": by_video,
    }


def score_by_video(args: argparse.Namespace, run_dir: Path, data_yaml: Path) -> dict[str, Any]:
    """Test mIoU of ``run_dir``'s model on each test video's images alone."""
    spec = load_dataset_spec(data_yaml)
    seg = segmenter(run_dir)
    out: dict[str, Any] = {}
    for split in spec.splits:
        if split.startswith("test_"):
            ev = evaluate(
                seg, spec, split, batch_size=4, num_workers=args.workers, progress=args.progress
            )
            out[split.removeprefix("test_")] = {
                "miou": report_dict(ev)["miou"],
                "images": ev.num_images,
            }
    return out


def select(
    args: argparse.Namespace,
    strategy: str,
    labelled: list[str],
    pool: list[str],
    permutation: list[str],
    model_dir: Path,
    budget: int,
) -> dict[str, Any]:
    """The images revealed to grow ``labelled`` to ``budget``, with the ranking's scores."""
    t0 = time.perf_counter()
    need = budget - len(labelled)
    if strategy == "random":
        new = [s for s in permutation[:budget] if s not in set(labelled)][:need]
        return {"revealed": new, "scores": None, "seconds": round(time.perf_counter() - t0, 1)}
    _, root = camvid()
    taken = set(labelled)
    rest = [s for s in pool if s not in taken]
    ranked = rank_by_uncertainty(
        segmenter(model_dir),
        [root / "train" / f"{s}.png" for s in rest],
        kind=args.kind,
        batch_size=4,
        progress=args.progress,
    )
    stems = [(Path(p).stem, score) for p, score in ranked]
    scores = [round(score, 6) for _, score in stems]
    return {
        "revealed": [s for s, _ in stems[:need]],
        "scores": scores[:need],
        "pool_scores": {
            "max": scores[0],
            "median": float(np.median(scores)),
            "min": scores[-1],
            "mean": round(float(np.mean(scores)), 6),
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }


# ---- the figure, the results, the page ----------------------------------------------------------------

States = dict[int, dict[str, Any]]  # {seed: state.json}


def curves(state: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """``{strategy: [(labelled, mIoU), ...]}`` of one replicate's finished steps."""
    steps = state["steps"]
    out: dict[str, list[tuple[int, float]]] = {}
    for strategy in STRATEGIES:
        pts = []
        for b in state["settings"]["budgets"]:
            key = _key(state, strategy, b)
            if "result" in steps.get(key, {}):
                pts.append((b, steps[key]["result"]["miou"]))
        out[strategy] = pts
    return out


def _key(state: dict[str, Any], strategy: str, budget: int) -> str:
    first = state["settings"]["budgets"][0]
    return f"shared/{first}" if budget == first else f"{strategy}/{budget}"


def plot(states: States, path: Path) -> None:
    """Test mIoU against labelled images: a colour per strategy, a line style per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = ("-", "--", ":", "-.")
    s: dict[str, Any] = {}
    for i, (seed, state) in enumerate(states.items()):
        s = state["settings"]
        for strategy, color, marker in zip(STRATEGIES, ("C0", "C1"), ("o", "s"), strict=True):
            pts = curves(state)[strategy]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    xs,
                    [100 * y for y in ys],
                    styles[i % len(styles)],
                    color=color,
                    marker=marker,
                    label=f"{LABELS[strategy]}, seed {seed}",
                )
    if not s:
        plt.close(fig)
        return
    ax.set_xscale("log")
    ax.set_xticks(s["budgets"], [str(b) for b in s["budgets"]])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images (of the 367 in CamVid train)")
    ax.set_ylabel("CamVid test mIoU %")
    ax.set_title(
        f"Uncertainty vs random selection: DeepLab v3+/Lite0, {s['steps']} steps per model",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, handlelength=3.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _diffs(states: States) -> dict[int, dict[int, float]]:
    """``{budget: {seed: uncertainty − random in points}}`` where both are finished."""
    out: dict[int, dict[int, float]] = {}
    for seed, state in states.items():
        c = {k: dict(v) for k, v in curves(state).items()}
        for b in state["settings"]["budgets"][1:]:
            if b in c["uncertainty"] and b in c["random"]:
                out.setdefault(b, {})[seed] = 100 * (c["uncertainty"][b] - c["random"][b])
    return out


def table(states: States) -> str:
    """Markdown: a row per budget; uncertainty, random and their difference for each seed."""
    seeds = list(states)
    head = "| labelled images | " + " | ".join(
        f"uncertainty s{k} | random s{k} | difference s{k}" for k in seeds
    )
    lines = [
        head + " | mean difference |",
        "| ---: | " + " | ".join("---: | ---: | ---:" for _ in seeds) + " | ---: |",
    ]
    budgets = next(iter(states.values()))["settings"]["budgets"]
    diffs = _diffs(states)
    for b in budgets:
        cells = []
        for state in states.values():
            c = {k: dict(v) for k, v in curves(state).items()}
            u, r = c["uncertainty"].get(b), c["random"].get(b)
            cells += ["—" if x is None else f"{100 * x:.2f}" for x in (u, r)]
            cells.append("—" if u is None or r is None else f"{100 * (u - r):+.2f}")
        d = diffs.get(b, {})
        mean = (
            f"{sum(d.values()) / len(d):+.2f}" if len(d) == len(seeds) and b != budgets[0] else "—"
        )
        lines.append(f"| {b} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def _step_seconds(run_dir: Path) -> list[float]:
    """Seconds per optimiser step of each epoch of a run (``metrics.csv``)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out, prev = [], 0
    for r in rows:
        step = int(r["step"])
        if r["epoch_seconds"] and step > prev:
            out.append(float(r["epoch_seconds"]) / (step - prev))
        prev = step
    return out


def _command(args: argparse.Namespace) -> str:
    return " ".join(["python bench/active_learning.py", shlex.join(args.argv)]).strip()


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _setup_lines(s: dict[str, Any], seeds: list[int]) -> list[str]:
    budgets = s["budgets"]
    return [
        "## Setup",
        "",
        "- **Pool**: CamVid train (367 images); **scored**: CamVid test, 233 images at 360×480, "
        "11 classes, void ignored, one confusion matrix over the split (`pixelwise.engine.evaluate`, "
        "float32, no TTA).",
        f"- **Replicates**: seeds {', '.join(map(str, seeds))}. A seed fixes a permutation of the "
        f"pool (`random_order`), whose first {budgets[0]} images are the starting set of both "
        "strategies (that model is trained once and shared), and the training seed (decoder "
        "initialisation, data order, augmentations).",
        f"- **Budgets**: {', '.join(map(str, budgets))} labelled images. At each, a model is "
        "trained afresh (ImageNet encoder weights) on the labelled images only and scored on the "
        "test split.",
        "- **Uncertainty**: the strategy's current model ranks the rest of the pool by mean "
        f"normalised pixel {s['kind']} on the whole 360×480 images (float32), and the top images "
        "are revealed to reach the next budget (plain top-k, no diversity term).",
        "- **Random**: the next images of the seeded permutation are revealed (at budget *b*, its "
        "first *b*).",
        f"- **Training** (`pixelwise.engine.train`, recipe `{s['recipe']}`: DeepLab v3+ on an "
        "ImageNet EfficientNet-Lite0, CE + Dice, AdamW lr 1e-3, poly schedule): "
        f"**{s['steps']} optimiser steps at every budget**, batch {s['batch_size']}, "
        f"{s['crop']}×{s['crop']} random crops (scale 0.5–1.75, flips), "
        f"{max(1, s['steps'] // 10)} warm-up steps, float32 on the CPU; epochs of "
        f"{s['epoch_steps']} steps (`samples_per_epoch`, a checkpoint each), no validation split "
        "(the last epoch is the model). Within a replicate only the labelled set differs between "
        "the two strategies. The step budget was sized so that a replicate fits well within an hour "
        "of this 2-core CPU even when other jobs share it.",
        "",
    ]


def _per_class_lines(states: States) -> list[str]:
    names: list[str] | None = None
    rows = []
    for seed, state in states.items():
        budgets = state["settings"]["budgets"]
        for b in budgets:
            for strategy in STRATEGIES if b != budgets[0] else ("shared",):
                res = state["steps"].get(_key(state, strategy, b), {}).get("result")
                if res is None:
                    continue
                names = names or list(res["iou"])
                label = "both" if strategy == "shared" else strategy
                seq = ", ".join(f"{k} {v}" for k, v in res["sequences"].items())
                rows.append(
                    f"| {seed} | {b} | {label} | {100 * res['miou']:.2f} | "
                    + " | ".join(
                        "—" if v is None else f"{100 * v:.1f}" for v in res["iou"].values()
                    )
                    + f" | {seq} |"
                )
    if not names:
        return []
    return [
        "Per-class IoU % and the labelled images by video (CamVid's train frames come from three "
        "videos: 62 of 0001TP, filmed at dusk, 101 of 0006R0 and 204 of 0016E5; its test split is "
        "62 frames of 0001TP and 171 of Seq05VD):",
        "",
        "| seed | labelled | strategy | mIoU | "
        + " | ".join(names)
        + " | labelled images by video |",
        "| ---: | ---: | --- | ---: | " + " | ".join("---:" for _ in names) + " | --- |",
        *rows,
        "",
    ]


def _first_budget(states: States) -> int:
    """The starting budget."""
    return next(iter(states.values()))["settings"]["budgets"][0]


def _reading_lines(states: States) -> list[str]:
    diffs = _diffs(states)
    pairs = [(b, seed, d) for b, per in diffs.items() for seed, d in per.items()]
    if not pairs:
        return []
    ahead = sum(1 for _, _, d in pairs if d > 0)
    lines = [
        "## Reading",
        "",
        "Uncertainty minus random, in mIoU points: "
        + "; ".join(
            f"at {b}: " + ", ".join(f"{d:+.2f} (seed {k})" for k, d in per.items())
            for b, per in diffs.items()
        )
        + f". Uncertainty was ahead in {ahead} of {len(pairs)} (budget, seed) comparisons.",
        "",
    ]
    values = [d for _, _, d in pairs]
    if ahead == len(pairs):
        verdict = (
            "**Bottom line**: on this setup uncertainty sampling (mean pixel entropy, plain top-k) "
            f"was ahead of random at every budget of every replicate, by {min(values):+.2f} to "
            f"{max(values):+.2f} points (mean {sum(values) / len(values):+.2f}). Read it as a "
            "consistent, small advantage, not as a measured size: the caveats below bound what "
            "it says." + _where(states)
        )
    elif ahead == 0:
        verdict = (
            "**Bottom line**: uncertainty sampling was behind random in every comparison, by "
            f"{max(values):+.2f} to {min(values):+.2f} points."
        )
    else:
        verdict = (
            "**Bottom line**: no consistent winner: uncertainty was ahead in "
            f"{ahead} of {len(pairs)} comparisons, the differences ranging from "
            f"{min(values):+.2f} to {max(values):+.2f} points."
        )
    lines += [verdict, ""]
    dusk = []
    for seed, state in states.items():
        s = state["settings"]
        start = state["steps"].get(_key(state, "shared", s["budgets"][0]), {}).get("result")
        if start is None:
            continue
        per = []
        for b in s["budgets"][1:]:
            u = state["steps"].get(_key(state, "uncertainty", b), {}).get("result")
            r = state["steps"].get(_key(state, "random", b), {}).get("result")
            if u and r:
                per.append(
                    f"{u['sequences'].get('0001TP', 0)} against {r['sequences'].get('0001TP', 0)} "
                    f"at {b}"
                )
        dusk.append(
            f"seed {seed}: {start['sequences'].get('0001TP', 0)} in the starting set; "
            + ("; ".join(per) or "no budget finished")
        )
    s = next(iter(states.values()))["settings"]
    b0, b1 = s["budgets"][0], s["budgets"][-1]
    drops = []
    for seed, state in states.items():
        for strategy, pts in curves(state).items():
            for (b_a, m_a), (b_b, m_b) in zip(pts, pts[1:], strict=False):
                if m_b < m_a:
                    drops.append(f"{strategy} {b_a}→{b_b}, seed {seed}: {100 * (m_b - m_a):+.2f}")
    steps_seen = sum(max(0, len(p) - 1) for st in states.values() for p in curves(st).values())
    if drops:
        noise = (
            f"Test mIoU fell with more labelled images in {len(drops)} of {steps_seen} steps along "
            f"the curves ({'; '.join(drops)}), which shows how much one training at this short "
            "budget varies (and that a fixed number of steps is spread thinner over more images): "
            "differences of a point or two are within that noise."
        )
    else:
        noise = (
            "How much one training at this budget varies with its seed was not measured "
            "separately: differences of a point or two may be within it."
        )
    starts = [
        st["steps"][_key(st, "shared", st["settings"]["budgets"][0])]["result"]["miou"]
        for st in states.values()
        if "result" in st["steps"].get(_key(st, "shared", st["settings"]["budgets"][0]), {})
    ]
    if len(starts) > 1:
        noise += (
            f" The starting models of the replicates (another {_first_budget(states)} images, another "
            f"training seed) differ by {100 * (max(starts) - min(starts)):.2f} points, more than "
            "any difference between the strategies. What the replicates add is the sign: within "
            "a replicate the two strategies share the start, the training seed and the schedule, "
            "so each comparison is paired, but the comparisons at the larger budgets build on "
            "the selections before them and are not independent."
        )
    n = len(states)
    lines += [
        "What the uncertainty strategy picked, by video: 0001TP frames (the dusk video, 62 of the "
        "367 pool images) in the labelled set, uncertainty against random — "
        + "; ".join(dusk)
        + ". 0001TP is also 62 of the 233 test images, so where uncertainty takes more of them, "
        "part of its gain may be coverage of a condition that a random sample under-represents "
        "and the test split holds, rather than hard examples in general (the scores on each test "
        "video alone, below, say how much). Plain top-k on "
        "consecutive video frames also takes near-duplicate neighbours (no diversity term).",
        "",
        *_by_video_lines(states),
        f"How far to trust it: {n} replicate{'s' if n > 1 else ''}, one training per point. "
        + noise
        + " Every model gets the same number of optimiser steps, so the larger budgets see each "
        f"image fewer times (about {s['steps'] * s['batch_size'] / b1:.0f} times at {b1} images, "
        f"{s['steps'] * s['batch_size'] / b0:.0f} at {b0}); the curves compare selection "
        "strategies at a short, fixed training budget, not fully trained models (the bundled "
        "model, trained 40 epochs on train + val, scores 68.9%), and the ranking models are "
        "those short-budget models too.",
        "",
    ]
    return lines


def _video_means(states: States) -> dict[str, list[float]]:
    """``{test video: [uncertainty − random in points, per (budget, seed)]}``."""
    out: dict[str, list[float]] = {}
    for state in states.values():
        for b in state["settings"]["budgets"][1:]:
            u = state["steps"].get(_key(state, "uncertainty", b), {}).get("result") or {}
            r = state["steps"].get(_key(state, "random", b), {}).get("result") or {}
            for v, x in u.get("test_by_video", {}).items():
                if v in r.get("test_by_video", {}):
                    out.setdefault(v, []).append(100 * (x["miou"] - r["test_by_video"][v]["miou"]))
    return out


def _where(states: States) -> str:
    """Which test video the advantage comes from, when one carries most of it."""
    means = {v: sum(d) / len(d) for v, d in _video_means(states).items() if d}
    if len(means) < 2:
        return ""
    top = max(means, key=means.__getitem__)
    rest = [m for v, m in means.items() if v != top]
    if means[top] <= 2 * max(rest + [0.0]):
        return ""
    others = ", ".join(f"{m:+.2f} on {v}" for v, m in means.items() if v != top)
    return (
        f" Most of it is on the {top} test images (mean {means[top]:+.2f} points, against "
        f"{others}), the video whose frames the strategy picked most."
    )


def _by_video_lines(states: States) -> list[str]:
    """Uncertainty − random on each test video's images alone."""
    rows: list[str] = []
    per_video: dict[str, list[float]] = {}
    videos: list[str] = []
    for seed, state in states.items():
        for b in state["settings"]["budgets"][1:]:
            u = state["steps"].get(_key(state, "uncertainty", b), {}).get("result") or {}
            r = state["steps"].get(_key(state, "random", b), {}).get("result") or {}
            if "test_by_video" not in u or "test_by_video" not in r:
                continue
            videos = videos or list(u["test_by_video"])
            cells = []
            for v in videos:
                mu, mr = u["test_by_video"][v]["miou"], r["test_by_video"][v]["miou"]
                per_video.setdefault(v, []).append(100 * (mu - mr))
                cells.append(f"{100 * mu:.2f} / {100 * mr:.2f} ({100 * (mu - mr):+.2f})")
            rows.append(f"| {seed} | {b} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    first = next(iter(states.values()))
    counts = next(
        (
            {v: x["images"] for v, x in st["result"]["test_by_video"].items()}
            for st in first["steps"].values()
            if "test_by_video" in st.get("result", {})
        ),
        {},
    )
    means = "; ".join(
        f"{v} {sum(d) / len(d):+.2f} (ahead in {sum(x > 0 for x in d)} of {len(d)})"
        for v, d in per_video.items()
    )
    return [
        "Scored on each test video alone (test mIoU %, uncertainty / random, and the difference):",
        "",
        "| seed | labelled | "
        + " | ".join(f"{v} ({counts.get(v, '?')} test images)" for v in videos)
        + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in videos) + " |",
        *rows,
        "",
        f"Mean difference by test video: {means}.",
        "",
    ]


def _timing_lines(states: States) -> list[str]:
    timing = []
    per_step: list[float] = []
    total = 0.0
    for seed, state in states.items():
        for key, step in state["steps"].items():
            res = step.get("result")
            if res is None:
                continue
            sel = (step.get("selection") or {}).get("seconds")
            per_step += _step_seconds(Path(res["run_dir"]))
            total += res["train_seconds"] + res["eval_seconds"] + (sel or 0)
            timing.append(
                f"| {seed} | {key} | {res['train_seconds'] / 60:.1f} | {res['eval_seconds']:.0f} | "
                + ("—" if sel is None else f"{sel:.0f}")
                + " |"
            )
    if not timing:
        return []
    return [
        "## Times",
        "",
        "Wall-clock on the 2-core CPU (training: the sum of `metrics.csv`'s `epoch_seconds`; "
        "evaluation: the 233 test images; selection: ranking the rest of the pool, or drawing at "
        "random):",
        "",
        "| seed | step | train min | evaluate s | select s |",
        "| ---: | --- | ---: | ---: | ---: |",
        *timing,
        "",
        f"Total {total / 60:.0f} minutes. A training step took from {min(per_step):.2f} to "
        f"{max(per_step):.2f} s (per-epoch means): the machine was shared with other jobs, so the "
        "spread measures the contention, and the fastest epoch is an upper bound on what a step "
        "costs alone.",
        "",
    ]


def report(args: argparse.Namespace, states: States) -> str:
    """``docs/active_learning.md``: the setup, the tables, the figure, the reading, the times."""
    s = next(iter(states.values()))["settings"]
    planned = (1 + 2 * (len(s["budgets"]) - 1)) * len(states)
    finished = sum(1 for st in states.values() for v in st["steps"].values() if "result" in v)
    lines = [
        "# Active learning on CamVid: uncertainty vs random selection",
        "",
        "`pixelwise.annotate.rank_by_uncertainty(segmenter, images, kind=...)` orders unlabelled "
        "images most uncertain first from the class probabilities of `Segmenter.segment_batch` "
        "(the one prediction path); `uncertainty_map(probs, kind)` gives the per-pixel map (H×W, "
        "in [0, 1]). Kinds: `entropy` (−Σ p log p / log K), `margin` (1 − (p₁ − p₂)) and "
        "`least_confident` ((1 − p₁) / (1 − 1/K)); each is 1 for a uniform distribution and 0 "
        "for a certain one, and an image's score is the mean of its map. `random_order(ids, "
        "seed=...)` is the baseline.",
        "",
        "This page measures whether labelling images in that order beats labelling them at random, "
        "by simulation on CamVid: the ground-truth masks are revealed in either order and a model "
        "is retrained at each budget.",
        "",
        "```bash",
        _command(args),
        "```",
        "",
        f"Everything lives in `{_rel(args.out)}/seed<k>/`; the command is resumable (a rerun "
        "skips finished steps and resumes a stopped training from its `last.ckpt`). All numbers, "
        "selections and timings: [results/active_learning.json](results/active_learning.json).",
        "",
        *_setup_lines(s, list(states)),
        "## Results",
        "",
        "CamVid test mIoU % against labelled images (s*k*: seed *k*; difference: uncertainty − "
        "random, in points):",
        "",
        table(states),
        "",
        f"![test mIoU against labelled images]({_rel(args.plot).removeprefix('docs/')})",
        "",
    ]
    if finished < planned:
        lines += [
            f"**Unfinished: {planned - finished} of {planned} trainings still to run**; rerun the "
            "command above to continue.",
            "",
        ]
    lines += _per_class_lines(states) + _reading_lines(states) + _timing_lines(states)
    return "\n".join(lines)


def write_results(args: argparse.Namespace, states: States) -> None:
    """Write the results JSON, the figure and the page from the finished steps."""
    doc = {
        "what": "active learning on CamVid: uncertainty vs random selection (bench/active_learning.py)",
        "command": _command(args),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "training_overrides": [
            o for o in overrides(args, Path("<run>/data.yaml"), 0) if not o.startswith("train.seed")
        ]
        + ["train.seed=<seed>"],
        "differences": {
            str(b): {str(k): round(d, 3) for k, d in per.items()}
            for b, per in _diffs(states).items()
        },
        "replicates": {
            str(seed): {
                "settings": state["settings"],
                "curves": {
                    k: [{"labelled": b, "miou": m} for b, m in v] for k, v in curves(state).items()
                },
                "steps": state["steps"],
            }
            for seed, state in states.items()
        },
    }
    write_text_atomic(args.results, json.dumps(doc, indent=1) + "\n")
    plot(states, args.plot)
    write_text_atomic(args.report, report(args, states))


# ---- the simulation ------------------------------------------------------------------------------------


def simulate(args: argparse.Namespace, seed: int, states: States) -> None:
    """Run (or resume) one replicate into ``<out>/seed<seed>/``, updating ``states[seed]`` and the
    written results after every finished step."""
    out = args.out / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"
    state = states[seed]
    pool, test = pool_and_test(args.pool_limit, args.test_limit)
    if args.budgets[-1] > len(pool):
        raise SystemExit(f"budget {args.budgets[-1]} is more than the pool's {len(pool)} images")
    permutation = random_order(pool, seed=seed)
    first = args.budgets[0]

    def done(key: str) -> bool:
        return "result" in state["steps"].get(key, {})

    def run(key: str, labelled: list[str], selection: dict | None) -> None:
        step = state["steps"].setdefault(key, {})
        step["labelled_stems"] = labelled
        if selection is not None:
            step["selection"] = selection
        save_state(state_path, state)
        run_dir = out / key.replace("/", "_b")
        step["result"] = train_and_score(args, seed, run_dir, labelled, test)
        save_state(state_path, state)
        write_results(args, states)
        log.info("seed %d %s: test mIoU %.2f%%", seed, key, 100 * step["result"]["miou"])

    for key, step in state["steps"].items():  # results from before test_by_video was kept
        res = step.get("result")
        if res is not None and "test_by_video" not in res:
            run_dir = out / key.replace("/", "_b")
            data_yaml = write_data_yaml(run_dir / "data.yaml", step["labelled_stems"], test)
            res["test_by_video"] = score_by_video(args, run_dir, data_yaml)
            save_state(state_path, state)
            log.info("seed %d %s: scored by test video %s", seed, key, res["test_by_video"])
    shared = f"shared/{first}"
    if not done(shared):
        run(shared, sorted(permutation[:first]), None)
    for prev, budget in zip(args.budgets, args.budgets[1:], strict=False):
        for strategy in STRATEGIES:
            key = f"{strategy}/{budget}"
            if done(key):
                continue
            prev_key = shared if prev == first else f"{strategy}/{prev}"
            labelled = state["steps"][prev_key]["labelled_stems"]
            selection = state["steps"].get(key, {}).get("selection")
            if selection is None:
                prev_dir = out / prev_key.replace("/", "_b")
                selection = select(args, strategy, labelled, pool, permutation, prev_dir, budget)
                log.info(
                    "seed %d %s: revealed %d images (%.0f s)",
                    seed,
                    key,
                    budget - prev,
                    selection["seconds"],
                )
            run(key, sorted(labelled + selection["revealed"]), selection)


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) every replicate, one after the other; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    states = {
        seed: load_state(args.out / f"seed{seed}" / "state.json", settings(args, seed))
        for seed in args.seeds
    }
    for seed in args.seeds:
        simulate(args, seed, states)
    write_results(args, states)
    print(table(states))
    return 0


if __name__ == "__main__":
    sys.exit(main())
