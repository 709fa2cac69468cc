"""Loss study: the same U-Net trained on CamVid and on the EM membranes with each loss, scored on the
CamVid test split and the membrane val split.

    python bench/loss_study.py --epochs 40 --crop 256                  # the whole study
    python bench/loss_study.py --epochs 40 --crop 256 --datasets camvid --losses ce wce
    python bench/loss_study.py --epochs 40 --crop 256 --list           # the runs and their overrides

Losses: ``ce`` cross-entropy; ``wce`` cross-entropy with median-frequency class weights (SegNet);
``focal`` (gamma 2); ``dice`` (soft Dice); ``ce_dice`` (CE + Dice, weights 1 and 1); ``lovasz``
(Lovász-softmax). Every run is ``pixelwise.engine.train`` on ``configs/camvid_unet.yaml`` or
``configs/membrane_unet.yaml`` with ``--set``-style overrides (the loss, then the budget, then any
``--set`` given here), then ``pixelwise.engine.evaluate`` of its ``best.ckpt``.

Resumable across sessions: each run lives in ``<out>/<budget>/<dataset>_<loss>/``. A run holding
``eval.json`` is done and skipped; one holding ``last.ckpt`` is resumed exactly where it stopped. The
budget (epochs, crop, steps, batch size, extra overrides) names the folder, so runs of different budgets
never mix. After every finished run the report is rewritten from all ``eval.json`` files found:
``docs/loss_study.md`` (one table per dataset: mIoU and per-class IoU, CamVid's small classes pole,
sign, pedestrian, bicyclist and fence first, in their own columns) and ``docs/loss_study.png``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("loss_study")


@dataclass(frozen=True)
class Study:
    recipe: Path
    split: str  # split scored after training
    focus: tuple[str, ...]  # classes shown first, in their own columns


STUDIES = {
    "camvid": Study(
        ROOT / "configs" / "camvid_unet.yaml",
        "test",
        ("pole", "sign", "pedestrian", "bicyclist", "fence"),
    ),
    "membrane": Study(ROOT / "configs" / "membrane_unet.yaml", "val", ("membrane", "cell")),
}

# name → (label, overrides). Every loss resets class_weights so that a recipe's own cannot leak in.
LOSSES = {
    "ce": ("cross-entropy", ["loss.terms=[{name: ce}]", "loss.class_weights=null"]),
    "wce": (
        "CE, median-frequency weights",
        ["loss.terms=[{name: ce}]", "loss.class_weights=median_frequency"],
    ),
    "focal": (
        "focal (γ = 2)",
        ["loss.terms=[{name: focal, params: {gamma: 2.0}}]", "loss.class_weights=null"],
    ),
    "dice": ("soft Dice", ["loss.terms=[{name: dice}]", "loss.class_weights=null"]),
    "ce_dice": (
        "CE + Dice",
        [
            "loss.terms=[{name: ce, weight: 1.0}, {name: dice, weight: 1.0}]",
            "loss.class_weights=null",
        ],
    ),
    "lovasz": ("Lovász-softmax", ["loss.terms=[{name: lovasz}]", "loss.class_weights=null"]),
}


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """The budget as overrides, applied after the loss's."""
    o = [f"train.epochs={args.epochs}", f"augment.crop_size=[{args.crop}, {args.crop}]"]
    if args.max_steps is not None:
        o.append(f"train.max_steps={args.max_steps}")
    if args.batch_size is not None:
        o.append(f"train.batch_size={args.batch_size}")
    return o + list(args.set or [])


def budget_tag(args: argparse.Namespace) -> str:
    """Folder name of a budget: ``e40_c256`` (+ ``_s<steps>``, ``_b<batch>``, a hash of ``--set``)."""
    tag = f"e{args.epochs}_c{args.crop}"
    if args.max_steps is not None:
        tag += f"_s{args.max_steps}"
    if args.batch_size is not None:
        tag += f"_b{args.batch_size}"
    if args.set:
        tag += "_" + hashlib.sha1("\n".join(args.set).encode()).hexdigest()[:8]
    return tag


def runtime_overrides(args: argparse.Namespace) -> list[str]:
    """Settings that change speed, not results' meaning: device, autocast, loader workers."""
    o = []
    if args.device is not None:
        o.append(f"train.device={args.device}")
    if args.amp is not None:
        o.append(f"train.amp={args.amp}")
    if args.workers is not None:
        o.append(f"train.num_workers={args.workers}")
    return o


def _train_seconds(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return sum(float(r["epoch_seconds"] or 0) for r in csv.DictReader(fh))


def run_one(dataset: str, loss: str, run_dir: Path, overrides: list[str], progress: bool) -> dict:
    """Train (or resume) one run, evaluate its best checkpoint, write and return ``eval.json``."""
    from pixelwise.config import load_config
    from pixelwise.data import load_dataset_spec
    from pixelwise.engine import Segmenter, evaluate, report_dict, train

    study = STUDIES[dataset]
    cfg = load_config(study.recipe, overrides)
    resume = (run_dir / "last.ckpt").exists()
    log.info("%s %s: %s in %s", dataset, loss, "resuming" if resume else "training", run_dir)
    result = train(cfg, run_dir, resume=resume, progress=progress)
    seg = Segmenter.from_checkpoint(run_dir / "best.ckpt", device=cfg.train.device)
    spec = load_dataset_spec(cfg.data.dataset)
    ev = evaluate(
        seg,
        spec,
        study.split,
        batch_size=cfg.train.eval_batch_size,
        num_workers=cfg.train.num_workers,
        progress=progress,
    )
    rep = report_dict(ev)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rep["study"] = {
        "dataset": dataset,
        "loss": loss,
        "overrides": overrides,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "best_val_miou": result.best_miou,
        "train_seconds": round(_train_seconds(run_dir), 1),
        "device": manifest.get("cuda_device") or manifest.get("processor"),
        "amp": manifest.get("amp"),
        "finished": time.strftime("%Y-%m-%d %H:%M"),
    }
    (run_dir / "eval.json").write_text(json.dumps(rep, indent=2) + "\n")
    return rep


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def collect(budget_dir: Path) -> dict[str, dict[str, dict]]:
    """``{dataset: {loss: eval.json}}`` for the finished runs under ``budget_dir``."""
    found: dict[str, dict[str, dict]] = {}
    for dataset in STUDIES:
        for loss in LOSSES:
            path = budget_dir / f"{dataset}_{loss}" / "eval.json"
            if path.is_file():
                found.setdefault(dataset, {})[loss] = json.loads(path.read_text())
    return found


def markdown(results: dict[str, dict[str, dict]], args: argparse.Namespace, tag: str) -> str:
    """The report: one table per dataset, a row per loss, IoU % per class."""
    lines = [
        "# Loss study",
        "",
        "The same U-Net recipe trained with each loss; only the loss changes. Written by "
        "`bench/loss_study.py` (see docs/losses.md for the losses):",
        "",
        f"    python bench/loss_study.py {' '.join(args.argv)}",
        "",
        f"Budget `{tag}`: {args.epochs} epochs, {args.crop}×{args.crop} crops"
        + (f", at most {args.max_steps} steps" if args.max_steps is not None else "")
        + (f", batch {args.batch_size}" if args.batch_size is not None else "")
        + (f", overrides `{' '.join(args.set)}`" if args.set else "")
        + f". Updated {time.strftime('%Y-%m-%d %H:%M')}; torch {torch.__version__}, "
        f"{platform.machine()}.",
        "",
    ]
    for dataset, study in STUDIES.items():
        runs = results.get(dataset, {})
        if dataset not in args.datasets and not runs:
            continue
        names: list[str] = []
        for rep in runs.values():
            names = [c["name"] for c in rep["per_class"]]
            break
        cols = [n for n in study.focus if n in names or not names]
        cols += [n for n in names if n not in cols]
        recipe = (
            study.recipe.relative_to(ROOT) if study.recipe.is_relative_to(ROOT) else study.recipe
        )
        lines += [
            f"## {dataset}: `{recipe}`, scored on split `{study.split}` (IoU %)",
            "",
            "| loss | mIoU | " + " | ".join(cols) + " | steps | train min | device |",
            "| --- | ---: | " + " | ".join("---:" for _ in cols) + " | ---: | ---: | --- |",
        ]
        for loss, (label, _) in LOSSES.items():
            if loss not in args.losses and loss not in runs:
                continue
            rep = runs.get(loss)
            if rep is None:
                lines.append(f"| {label} | pending | " + " | ".join("" for _ in cols) + " | | | |")
                continue
            iou = {c["name"]: c["iou"] for c in rep["per_class"]}
            s = rep["study"]
            lines.append(
                f"| {label} | **{_pct(rep['miou'])}** | "
                + " | ".join(_pct(iou.get(n)) for n in cols)
                + f" | {s['steps']} | {s['train_seconds'] / 60:.1f} | {s['device']}, {s['amp']} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict]], path: Path) -> None:
    """Grouped bars: per dataset, mIoU and the focus classes' IoU for each loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in STUDIES if results.get(d)]
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        runs = results[dataset]
        groups = ["mIoU", *STUDIES[dataset].focus]
        width = 0.8 / max(1, len(runs))
        for i, (loss, rep) in enumerate(runs.items()):
            iou = {c["name"]: c["iou"] for c in rep["per_class"]}
            values = [rep["miou"], *(iou.get(n) for n in STUDIES[dataset].focus)]
            xs = [g + (i - (len(runs) - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, [100 * (v or 0.0) for v in values], width, label=LOSSES[loss][0])
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel("IoU %")
        ax.set_title(f"{dataset} ({STUDIES[dataset].split})")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, required=True, help="training epochs per run")
    ap.add_argument("--crop", type=int, required=True, help="square training crop size")
    ap.add_argument("--max-steps", type=int, help="stop each run after this many steps")
    ap.add_argument("--batch-size", type=int, help="override the recipes' batch size")
    ap.add_argument("--datasets", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    ap.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    ap.add_argument(
        "--set", action="append", help="extra override for every run (key.sub=value); repeatable"
    )
    ap.add_argument("--device", help="train.device for every run (auto, cpu, cuda)")
    ap.add_argument("--amp", help="train.amp for every run (auto, off, bf16, fp16)")
    ap.add_argument("--workers", type=int, help="train.num_workers for every run")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "loss_study", help="runs folder")
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / "loss_study.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "loss_study.png")
    ap.add_argument(
        "--keep-last", action="store_true", help="keep last.ckpt of finished runs (best.ckpt stays)"
    )
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    ap.add_argument(
        "--list", action="store_true", help="print the runs and their state, train nothing"
    )
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tag = budget_tag(args)
    budget_dir = args.out / tag
    failed: list[str] = []
    for dataset in args.datasets:
        for loss in args.losses:
            run_dir = budget_dir / f"{dataset}_{loss}"
            overrides = LOSSES[loss][1] + budget_overrides(args) + runtime_overrides(args)
            if args.list:
                state = (
                    "done"
                    if (run_dir / "eval.json").exists()
                    else "resumable"
                    if (run_dir / "last.ckpt").exists()
                    else "to do"
                )
                print(
                    f"{dataset}_{loss} [{state}]: {STUDIES[dataset].recipe.name} "
                    + " ".join(f"--set '{o}'" for o in overrides)
                )
                continue
            if (run_dir / "eval.json").exists():
                log.info("%s %s: done (%s)", dataset, loss, run_dir / "eval.json")
                continue
            try:
                rep = run_one(dataset, loss, run_dir, overrides, args.progress)
            except Exception:  # noqa: BLE001 - one failed run must not stop the study
                log.error("%s %s failed:\n%s", dataset, loss, traceback.format_exc())
                failed.append(f"{dataset}_{loss}")
                continue
            log.info(
                "%s %s: %s mIoU %s%%", dataset, loss, STUDIES[dataset].split, _pct(rep["miou"])
            )
            if not args.keep_last:
                (run_dir / "last.ckpt").unlink(missing_ok=True)
            results = collect(budget_dir)
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(markdown(results, args, tag))
            plot(results, args.plot)
    if args.list:
        return 0
    results = collect(budget_dir)
    if results:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(results, args, tag))
        plot(results, args.plot)
        log.info("report: %s, plot: %s", args.report, args.plot)
    if failed:
        log.error("failed runs (re-run to retry): %s", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
