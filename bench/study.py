"""Resumable training studies: one recipe trained once per variant, every run scored the same way.

A study is a small :class:`Study` record (its datasets, its variants, how to label them); this module
does the rest, shared by ``bench/loss_study.py`` and ``bench/arch_study.py``:

* every run is ``pixelwise.engine.train`` on a recipe with ``--set``-style overrides (the variant's,
  then the budget's, then any ``--set`` given, then the runtime's: device, autocast, loader workers),
  then ``pixelwise.engine.evaluate`` of its ``best.ckpt`` on the dataset's scored split, written to
  ``eval.json``;
* each run lives in ``<out>/<budget>/<dataset>_<variant>/``. A run holding ``eval.json`` is done and
  skipped; one holding ``last.ckpt`` is resumed exactly where it stopped. The budget (epochs, crop,
  steps, batch size, a hash of the extra overrides) names the folder, so runs of different budgets
  never mix;
* after every finished run the report (one markdown table per dataset: a row per variant, mIoU and
  per-class IoU, the dataset's focus classes first) and a plot are rewritten from all ``eval.json``
  files found.

A study script defines its :class:`Study` and calls :func:`main` with it.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ROOT",
    "Column",
    "Dataset",
    "Results",
    "Study",
    "Variant",
    "budget_overrides",
    "budget_tag",
    "collect",
    "iou_bars",
    "main",
    "markdown",
    "parse_args",
    "pct",
    "plot",
    "run_config",
    "run_one",
    "runtime_overrides",
]

ROOT = Path(__file__).resolve().parents[1]

Results = dict[str, dict[str, dict]]  # {dataset: {variant: eval.json}}


@dataclass(frozen=True)
class Dataset:
    """A dataset a study trains on.

    Args:
        recipe: the recipe every variant starts from; ``None`` when each variant brings its own.
        split: the split scored after training.
        focus: classes shown first in the report, in their own columns, and plotted.
    """

    recipe: Path | None
    split: str
    focus: tuple[str, ...]


@dataclass(frozen=True)
class Variant:
    """One row of a study: a label and the overrides that make it (and its own recipe, if any)."""

    label: str
    overrides: tuple[str, ...] = ()
    recipe: Path | None = None  # replaces the dataset's recipe


@dataclass(frozen=True)
class Column:
    """An extra report column after the variant's label, computed from a run's config.

    ``value(cfg)`` receives the run's :class:`pixelwise.config.RunConfig` (for pending runs: the one
    they will train with) and returns the cell's text.
    """

    header: str
    value: Callable[[Any], str]
    numeric: bool = True


@dataclass(frozen=True)
class Study:
    """What a study script defines; :func:`main` runs it.

    Args:
        name: logger name and default runs folder (``runs/<name>``).
        script: the script, as the report quotes its command line (``bench/loss_study.py``).
        doc_name: default report and plot (``docs/<doc_name>.md`` / ``.png``).
        title: the report's heading.
        intro: markdown paragraph(s) under the heading, before the command line.
        description: one line for ``--help``.
        datasets: ``{name: Dataset}``, in report order.
        variants: ``{name: Variant}``, in report order.
        variant_name: the JSON key of a run's variant in ``eval.json`` (``loss``).
        variant_flag: the command-line option choosing variants (``losses`` → ``--losses``).
        variant_header: the report's first column header.
        columns: extra report columns after the label.
        plot: replaces :func:`plot` (same arguments: study, results, path).
    """

    name: str
    script: str
    doc_name: str
    title: str
    intro: str
    description: str
    datasets: Mapping[str, Dataset]
    variants: Mapping[str, Variant]
    variant_name: str
    variant_flag: str
    variant_header: str
    columns: tuple[Column, ...] = ()
    plot: Callable[[Study, Results, Path], None] | None = field(default=None, compare=False)

    def recipe(self, dataset: str, variant: str) -> Path:
        """The recipe of run ``dataset`` × ``variant``: the variant's own, else the dataset's."""
        recipe = self.variants[variant].recipe or self.datasets[dataset].recipe
        if recipe is None:
            raise ValueError(f"{self.name}: neither {dataset!r} nor {variant!r} names a recipe")
        return recipe


# ---- overrides and the budget's folder ------------------------------------------------------------


def parse_epochs(values: list[str], datasets: list[str]) -> dict[str, int]:
    """``--epochs`` values → epochs per dataset: ``12`` for every dataset, or ``camvid=12
    membrane=40`` (a bare number sets the datasets not named)."""
    default: int | None = None
    out: dict[str, int] = {}
    for v in values:
        name, sep, num = v.rpartition("=")
        try:
            n = int(num)
        except ValueError:
            raise SystemExit(f"--epochs {v!r}: expected N or DATASET=N") from None
        if n < 1:
            raise SystemExit(f"--epochs {v!r}: epochs must be >= 1")
        if not sep:
            default = n
        elif name not in datasets:
            raise SystemExit(f"--epochs {v!r}: unknown dataset {name!r} ({', '.join(datasets)})")
        else:
            out[name] = n
    missing = [d for d in datasets if d not in out and default is None]
    if missing:
        raise SystemExit(f"--epochs: no epochs given for {', '.join(missing)}")
    return {d: out.get(d, default) for d in datasets}  # type: ignore[misc]


def epochs_text(epochs: dict[str, int]) -> str:
    """``12`` when every dataset has the same epochs, else ``camvid 12, membrane 40``."""
    if len(set(epochs.values())) == 1:
        return str(next(iter(epochs.values())))
    return ", ".join(f"{d} {n}" for d, n in epochs.items())


def budget_overrides(args: argparse.Namespace, dataset: str) -> list[str]:
    """The budget of ``dataset``'s runs as overrides, applied after the variant's."""
    o = [
        f"train.epochs={args.epochs[dataset]}",
        f"augment.crop_size=[{args.crop}, {args.crop}]",
    ]
    if args.max_steps is not None:
        o.append(f"train.max_steps={args.max_steps}")
    if args.batch_size is not None:
        o.append(f"train.batch_size={args.batch_size}")
    return o + list(args.set or [])


def budget_tag(args: argparse.Namespace) -> str:
    """Folder name of a budget: ``e40_c256`` (+ ``_s<steps>``, ``_b<batch>``, a hash of ``--set``)."""
    ep = args.epochs
    if len(set(ep.values())) == 1:
        tag = f"e{next(iter(ep.values()))}"
    else:
        tag = "e" + "-".join(f"{d}{n}" for d, n in sorted(ep.items()))
    tag += f"_c{args.crop}"
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


def _overrides(study: Study, dataset: str, variant: str, args: argparse.Namespace) -> list[str]:
    return (
        list(study.variants[variant].overrides)
        + budget_overrides(args, dataset)
        + runtime_overrides(args)
    )


# ---- one run ---------------------------------------------------------------------------------------


def _train_seconds(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return sum(float(r["epoch_seconds"] or 0) for r in csv.DictReader(fh))


def run_one(
    study: Study, dataset: str, variant: str, run_dir: Path, overrides: list[str], progress: bool
) -> dict:
    """Train (or resume) one run, evaluate its best checkpoint, write and return ``eval.json``."""
    from pixelwise.config import load_config
    from pixelwise.data import load_dataset_spec
    from pixelwise.engine import Segmenter, evaluate, report_dict, train

    log = logging.getLogger(study.name)
    split = study.datasets[dataset].split
    cfg = load_config(study.recipe(dataset, variant), overrides)
    resume = (run_dir / "last.ckpt").exists()
    log.info("%s %s: %s in %s", dataset, variant, "resuming" if resume else "training", run_dir)
    result = train(cfg, run_dir, resume=resume, progress=progress)
    seg = Segmenter.from_checkpoint(run_dir / "best.ckpt", device=cfg.train.device)
    spec = load_dataset_spec(cfg.data.dataset)
    ev = evaluate(
        seg,
        spec,
        split,
        batch_size=cfg.train.eval_batch_size,
        num_workers=cfg.train.num_workers,
        progress=progress,
    )
    rep = report_dict(ev)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rep["study"] = {
        "dataset": dataset,
        study.variant_name: variant,
        "recipe": str(_rel(study.recipe(dataset, variant))),
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


def run_config(study: Study, dataset: str, variant: str, overrides: list[str]) -> Any:
    """The :class:`pixelwise.config.RunConfig` a run trains (or trained) with."""
    from pixelwise.config import load_config

    return load_config(study.recipe(dataset, variant), overrides)


# ---- the report --------------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    """A score in [0, 1] as a percentage with two decimals; ``—`` for none."""
    return "—" if x is None else f"{100 * x:.2f}"


def _rel(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def collect(study: Study, budget_dir: Path) -> Results:
    """``{dataset: {variant: eval.json}}`` for the finished runs under ``budget_dir``."""
    found: Results = {}
    for dataset in study.datasets:
        for variant in study.variants:
            path = budget_dir / f"{dataset}_{variant}" / "eval.json"
            if path.is_file():
                found.setdefault(dataset, {})[variant] = json.loads(path.read_text())
    return found


def _extra_cells(
    study: Study, dataset: str, variant: str, overrides: list[str], log: logging.Logger
) -> list[str]:
    if not study.columns:
        return []
    try:
        cfg = run_config(study, dataset, variant, overrides)
        return [c.value(cfg) for c in study.columns]
    except Exception as exc:  # noqa: BLE001 - a column that cannot be computed shows a dash
        log.warning("%s %s: extra columns unavailable (%s)", dataset, variant, exc)
        return ["—" for _ in study.columns]


def markdown(study: Study, results: Results, args: argparse.Namespace, tag: str) -> str:
    """The report: one table per dataset, a row per variant, IoU % per class."""
    log = logging.getLogger(study.name)
    lines = [
        f"# {study.title}",
        "",
        study.intro,
        "",
        f"    python {study.script} {' '.join(args.argv)}",
        "",
        f"Budget `{tag}`: {epochs_text(args.epochs)} epochs, {args.crop}×{args.crop} crops"
        + (f", at most {args.max_steps} steps" if args.max_steps is not None else "")
        + (f", batch {args.batch_size}" if args.batch_size is not None else "")
        + (f", overrides `{' '.join(args.set)}`" if args.set else "")
        + f". Updated {time.strftime('%Y-%m-%d %H:%M')}; torch {torch.__version__}, "
        f"{platform.machine()}.",
        "",
    ]
    extra_h = [c.header for c in study.columns]
    extra_a = ["---:" if c.numeric else "---" for c in study.columns]
    for dataset, ds in study.datasets.items():
        runs = results.get(dataset, {})
        if dataset not in args.datasets and not runs:
            continue
        names: list[str] = []
        for rep in runs.values():
            names = [c["name"] for c in rep["per_class"]]
            break
        cols = [n for n in ds.focus if n in names or not names]
        cols += [n for n in names if n not in cols]
        where = f"`{_rel(ds.recipe)}`, scored" if ds.recipe is not None else "scored"
        lines += [
            f"## {dataset}: {where} on split `{ds.split}` (IoU %)",
            "",
            f"| {study.variant_header} | "
            + "".join(f"{h} | " for h in extra_h)
            + "mIoU | "
            + " | ".join(cols)
            + " | steps | train min | device |",
            "| --- | "
            + "".join(f"{a} | " for a in extra_a)
            + "---: | "
            + " | ".join("---:" for _ in cols)
            + " | ---: | ---: | --- |",
        ]
        for variant, v in study.variants.items():
            if variant not in args.variants and variant not in runs:
                continue
            rep = runs.get(variant)
            overrides = (
                rep["study"]["overrides"]
                if rep is not None
                else _overrides(study, dataset, variant, args)
            )
            extra = "".join(
                f"{x} | " for x in _extra_cells(study, dataset, variant, overrides, log)
            )
            if rep is None:
                lines.append(
                    f"| {v.label} | {extra}pending | " + " | ".join("" for _ in cols) + " | | | |"
                )
                continue
            iou = {c["name"]: c["iou"] for c in rep["per_class"]}
            s = rep["study"]
            lines.append(
                f"| {v.label} | {extra}**{pct(rep['miou'])}** | "
                + " | ".join(pct(iou.get(n)) for n in cols)
                + f" | {s['steps']} | {s['train_seconds'] / 60:.1f} | {s['device']}, {s['amp']} |"
            )
        lines.append("")
    return "\n".join(lines)


def iou_bars(ax: Any, study: Study, dataset: str, runs: dict[str, dict]) -> None:
    """Grouped bars on ``ax``: mIoU and the focus classes' IoU, one bar per variant."""
    focus = study.datasets[dataset].focus
    groups = ["mIoU", *focus]
    width = 0.8 / max(1, len(runs))
    for i, (variant, rep) in enumerate(runs.items()):
        iou = {c["name"]: c["iou"] for c in rep["per_class"]}
        values = [rep["miou"], *(iou.get(n) for n in focus)]
        xs = [g + (i - (len(runs) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [100 * (v or 0.0) for v in values], width, label=study.variants[variant].label)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("IoU %")
    ax.set_title(f"{dataset} ({study.datasets[dataset].split})")
    ax.grid(axis="y", alpha=0.3)


def plot(study: Study, results: Results, path: Path) -> None:
    """Grouped bars: per dataset, mIoU and the focus classes' IoU for each variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in study.datasets if results.get(d)]
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        iou_bars(ax, study, dataset, results[dataset])
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(study: Study, budget_dir: Path, args: argparse.Namespace, tag: str) -> Results:
    results = collect(study, budget_dir)
    if results:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(markdown(study, results, args, tag))
        (study.plot or plot)(study, results, args.plot)
    return results


# ---- command line ------------------------------------------------------------------------------------


def parse_args(study: Study, argv: list[str] | None) -> argparse.Namespace:
    """The command line every study shares; the chosen variants land in ``args.variants``."""
    ap = argparse.ArgumentParser(description=study.description)
    ap.add_argument(
        "--epochs",
        nargs="+",
        required=True,
        help="training epochs per run: N, or DATASET=N for each dataset (camvid=12 membrane=40)",
    )
    ap.add_argument("--crop", type=int, required=True, help="square training crop size")
    ap.add_argument("--max-steps", type=int, help="stop each run after this many steps")
    ap.add_argument("--batch-size", type=int, help="override the recipes' batch size")
    ap.add_argument(
        "--datasets", nargs="+", default=list(study.datasets), choices=list(study.datasets)
    )
    ap.add_argument(
        f"--{study.variant_flag}",
        dest="variants",
        nargs="+",
        default=list(study.variants),
        choices=list(study.variants),
    )
    ap.add_argument(
        "--set", action="append", help="extra override for every run (key.sub=value); repeatable"
    )
    ap.add_argument("--device", help="train.device for every run (auto, cpu, cuda)")
    ap.add_argument("--amp", help="train.amp for every run (auto, off, bf16, fp16)")
    ap.add_argument("--workers", type=int, help="train.num_workers for every run")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / study.name, help="runs folder")
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / f"{study.doc_name}.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / f"{study.doc_name}.png")
    ap.add_argument(
        "--keep-last", action="store_true", help="keep last.ckpt of finished runs (best.ckpt stays)"
    )
    ap.add_argument("--progress", action="store_true", help="show progress bars")
    ap.add_argument(
        "--list", action="store_true", help="print the runs and their state, train nothing"
    )
    args = ap.parse_args(argv)
    args.epochs = parse_epochs(args.epochs, list(study.datasets))
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def _state(run_dir: Path) -> str:
    if (run_dir / "eval.json").exists():
        return "done"
    return "resumable" if (run_dir / "last.ckpt").exists() else "to do"


def main(study: Study, argv: list[str] | None = None) -> int:
    """Run (or ``--list``) every chosen dataset × variant; rewrite the report after each run.

    Args:
        study: the study to run.
        argv: command-line arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 1 if a run failed (re-running retries it).
    """
    args = parse_args(study, argv)
    log = logging.getLogger(study.name)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tag = budget_tag(args)
    budget_dir = args.out / tag
    failed: list[str] = []
    for dataset in args.datasets:
        for variant in args.variants:
            run_dir = budget_dir / f"{dataset}_{variant}"
            overrides = _overrides(study, dataset, variant, args)
            if args.list:
                print(
                    f"{dataset}_{variant} [{_state(run_dir)}]: "
                    f"{study.recipe(dataset, variant).name} "
                    + " ".join(f"--set '{o}'" for o in overrides)
                )
                continue
            if (run_dir / "eval.json").exists():
                log.info("%s %s: done (%s)", dataset, variant, run_dir / "eval.json")
                continue
            try:
                rep = run_one(study, dataset, variant, run_dir, overrides, args.progress)
            except Exception:  # noqa: BLE001 - one failed run must not stop the study
                log.error("%s %s failed:\n%s", dataset, variant, traceback.format_exc())
                failed.append(f"{dataset}_{variant}")
                continue
            log.info(
                "%s %s: %s mIoU %s%%",
                dataset,
                variant,
                study.datasets[dataset].split,
                pct(rep["miou"]),
            )
            if not args.keep_last:
                (run_dir / "last.ckpt").unlink(missing_ok=True)
            _write(study, budget_dir, args, tag)
    if args.list:
        return 0
    if _write(study, budget_dir, args, tag):
        log.info("report: %s, plot: %s", args.report, args.plot)
    if failed:
        log.error("failed runs (re-run to retry): %s", ", ".join(failed))
        return 1
    return 0
