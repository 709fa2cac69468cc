"""``pixelwise auto``: fingerprint → plan → (search) → train → evaluate → bundle → report, resumable.

Each step writes its result into the output folder atomically, and a step whose result is there
already is skipped ("done already"), so re-running the same command after a kill continues at the
first unfinished step. docs/auto.md lists the files.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_path, write_text_atomic
from ..data.spec import DatasetSpec, load_dataset_spec
from ..engine.callbacks import Callback
from ..errors import PixelwiseError
from .fingerprint import Fingerprint, fingerprint
from .plan import EVAL_SHARE, Plan, measure_step_seconds, plan, with_epochs

__all__ = ["AutoResult", "DeadlineStop", "parse_duration", "bundle_name_for", "run_auto"]

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1.5h`` or a plain number of seconds (> 0)."""
    m = _DURATION.match(str(text))
    seconds = float(m.group(1)) * _UNITS[m.group(2).lower()] if m else 0.0
    if not m or seconds <= 0:
        raise PixelwiseError(
            f"--time {text!r}: expected a positive duration such as 90s, 30m, 2h or 600 (seconds)"
        )
    return seconds


def bundle_name_for(name: str) -> str:
    """A bundle name from a dataset name: letters, digits, ``_`` and ``-`` only (``model`` if none)."""
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return clean or "model"


class DeadlineStop(Callback):
    """Stop training after the epoch during which ``seconds`` of training time have passed, counted
    over resumed runs too (the time spent is saved in ``last.ckpt``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spent = 0.0
        self._t0 = time.perf_counter()
        self.reached = False

    def on_train_start(self, state: Any) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, state: Any, row: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.spent += now - self._t0
        self._t0 = now
        if self.spent >= self.seconds:
            self.reached = True
            state.stop_training = True

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self.spent}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent = float(state.get("spent", 0.0))


@dataclass(frozen=True)
class AutoResult:
    """What :func:`run_auto` did: ``steps`` maps each step to its one-line outcome, ``skipped``
    the steps whose result was there already; the paths of the files it wrote."""

    out: Path
    steps: dict[str, str]
    skipped: list[str]
    bundle: Path
    evaluation: Path
    report: Path
    files: list[Path] = field(default_factory=list)
    search: Path | None = None  # search.json, when the run searched


@dataclass
class _Run:
    """What the steps share."""

    spec: DatasetSpec
    out: Path
    budget: float
    device: str
    measure: bool
    progress: bool
    max_epochs: int | None
    say: Callable[[str], None]
    trials: int | None = None  # --search: the number of candidates; None: no search
    start: float = field(default_factory=time.perf_counter)
    steps: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def done(self, step: str, message: str, *, already: bool = False) -> None:
        line = f"{step}: done already ({message})" if already else f"{step}: {message}"
        self.steps[step] = line
        if already:
            self.skipped.append(step)
        self.say(line)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or ``None`` when it is missing or unreadable (then the step reruns)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _step_fingerprint(r: _Run) -> Fingerprint:
    path = r.out / "fingerprint.json"
    known = _read_json(path)
    if known is not None:
        try:
            fp = Fingerprint.from_dict(known)
        except (PixelwiseError, TypeError):
            fp = None
        if fp is not None:
            _check_same_dataset(r, fp)
            r.done("fingerprint", f"{path.name}: {fp.name}", already=True)
            return fp
    fp = fingerprint(r.spec)
    write_text_atomic(path, fp.to_json() + "\n")
    h, w = fp.median_size
    r.done(
        "fingerprint",
        f"{fp.name}: {fp.num_classes} classes, {fp.sample_of} labelled {fp.fingerprinted_splits[0]}"
        f" images, median {h:g}x{w:g}, {fp.image_channels} channel(s) -> {path.name}",
    )
    return fp


def _check_same_dataset(r: _Run, fp: Fingerprint) -> None:
    spec = r.spec
    if fp.name != spec.name or fp.num_classes != spec.num_classes:
        raise PixelwiseError(
            f"{r.out} holds an auto run of dataset {fp.name!r}, not {spec.name!r}; "
            "choose another --out"
        )


def _capped(p: Plan, max_epochs: int | None) -> Plan:
    """``p`` with at most ``max_epochs`` epochs (validation and warm-up scaled with them)."""
    if max_epochs is None or p.recipe.train.epochs <= max_epochs:
        return p
    recipe = with_epochs(p.recipe, max_epochs, int(p.estimates.get("steps_per_epoch", 1)))
    why = f"epochs capped at {max_epochs} (max_epochs), below the {p.recipe.train.epochs} that fit"
    return Plan(recipe, [*p.reasons, why], {**p.estimates, "epochs": max_epochs})


def _step_plan(r: _Run, fp: Fingerprint) -> tuple[Path, dict[str, Any]]:
    recipe_path, plan_path = r.out / "recipe.yaml", r.out / "plan.json"
    known = _read_json(plan_path)
    if known is not None and recipe_path.exists():
        est = known.get("estimates", {})
        r.done("plan", f"{recipe_path.name}, {est.get('epochs')} epoch(s)", already=True)
        return recipe_path, known
    from ..engine.runtime import resolve_device

    device = str(resolve_device(r.device))
    p = _capped(plan(fp, budget_seconds=r.budget, device=device), r.max_epochs)
    if r.measure:
        step = measure_step_seconds(p.recipe)
        p = _capped(
            plan(fp, budget_seconds=r.budget, device=device, step_seconds=step), r.max_epochs
        )
    with atomic_path(recipe_path) as tmp:
        p.write(tmp)
    doc = p.to_dict()
    _write_json(plan_path, doc)
    est = p.estimates
    timed = "measured" if est["measured"] else "estimated"
    r.done(
        "plan",
        f"{p.recipe.model.name}, crop {p.recipe.augment.crop_size}, batch "
        f"{p.recipe.train.batch_size}, {est['epochs']} epoch(s) at {est['step_seconds']:.3g} s "
        f"per step ({timed}) -> {recipe_path.name}, {plan_path.name}",
    )
    return recipe_path, doc


def _check_search_possible(r: _Run, fp: Fingerprint) -> None:
    """Before anything is trained: a search needs a labelled val split (the plan's rule for
    validating), and an output folder not trained without a search already."""
    if not (fp.has_val and fp.fingerprinted_splits[0] != "val"):
        raise PixelwiseError(
            f"--search chooses on a validation split, and dataset {fp.name!r} has no labelled "
            "'val' split: add one, or run without --search"
        )
    if (r.out / "train" / "last.ckpt").exists() and _read_json(r.out / "search.json") is None:
        raise PixelwiseError(
            f"{r.out} was trained without --search (train/): choose another --out, or delete "
            "train/ and train.json to search"
        )


def _step_search(r: _Run, fp: Fingerprint, plan_doc: dict[str, Any], trials: int) -> dict[str, Any]:
    """Compare the candidates in ``out/search`` (pixelwise.auto.search); the winner, rescheduled
    for the time left, becomes ``recipe.yaml``; ``search.json`` marks the step finished."""
    from .search import final_plan, run_search

    path, recipe_path = r.out / "search.json", r.out / "recipe.yaml"
    known = _read_json(path)
    if known is not None and recipe_path.exists():
        r.done("search", f"{path.name}: {known.get('winner')!r} chosen", already=True)
        return known
    doc = run_search(
        plan_doc,
        r.out / "search",
        budget_seconds=r.budget,
        trials=trials,
        fp=fp,
        measure=r.measure,
        progress=r.progress,
        max_epochs=r.max_epochs,
        say=r.say,
    )
    left = r.budget * (1 - EVAL_SHARE) - (time.perf_counter() - r.start)
    final = final_plan(plan_doc, doc, r.out / "search", train_seconds=left, max_epochs=r.max_epochs)
    with atomic_path(recipe_path) as tmp:
        final.write(tmp)
    doc["final"] = final.to_dict()
    _write_json(path, doc)
    won = next(t for t in doc["trials"] if t["candidate"] == doc["winner"])
    r.done(
        "search",
        f"{len(doc['trials'])} trial(s); chosen {doc['winner']!r} (best val mIoU "
        f"{100 * won['best_val_miou']:.2f}%), {final.recipe.train.epochs} epoch(s) for the time "
        f"left -> {recipe_path.name}, {path.name}",
    )
    return doc


def _step_train(r: _Run, recipe_path: Path) -> Path:
    """Train into ``out/train`` (resumed from ``last.ckpt``); ``train.json`` marks it finished."""
    from ..config import load_config
    from ..engine.train import train

    run_dir, marker = r.out / "train", r.out / "train.json"
    known = _read_json(marker)
    if known is not None and (run_dir / "best.ckpt").exists():
        r.done("train", f"{known.get('epochs')} epoch(s), {marker.name}", already=True)
        return run_dir / "best.ckpt"
    cfg = load_config(recipe_path)
    resume = (run_dir / "last.ckpt").exists()
    share = r.budget * (1 - EVAL_SHARE) - (time.perf_counter() - r.start)
    deadline = DeadlineStop(max(0.0, share))
    r.say(
        f"train: {'resuming' if resume else 'starting'} {cfg.train.epochs} epoch(s) in "
        f"{run_dir} (stops after the epoch that passes {deadline.seconds:.0f} s)"
    )
    result = train(cfg, run_dir, resume=resume, progress=r.progress, callbacks=[deadline])
    last = _finished_epochs(run_dir)
    _write_json(
        marker,
        {
            "epochs": last,
            "planned_epochs": cfg.train.epochs,
            "steps": result.steps,
            "best_epoch": result.best_epoch,
            "best_miou": result.best_miou,
            "monitor": result.monitor,
            "stopped_at_deadline": deadline.reached,
            "train_seconds": round(deadline.spent, 3),
        },
    )
    best = "—" if result.best_miou is None else f"{100 * result.best_miou:.2f}%"
    cut = "; stopped at the time budget" if deadline.reached else ""
    r.done("train", f"{last} epoch(s), best val mIoU {best}{cut} -> {run_dir.name}/best.ckpt")
    return run_dir / "best.ckpt"


def _finished_epochs(run_dir: Path) -> int:
    """Epochs in ``metrics.csv`` (rows after the header)."""
    try:
        lines = (run_dir / "metrics.csv").read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    return max(0, len([x for x in lines if x.strip()]) - 1)


def _held_out(fp: Fingerprint) -> str | None:
    return "test" if fp.has_test else "val" if fp.has_val else None


def _step_evaluate(r: _Run, fp: Fingerprint, best: Path) -> tuple[Path, dict[str, Any]]:
    from ..engine.evaluate import evaluate, report_dict, write_report
    from ..engine.loading import load_model
    from ..engine.predictor import Segmenter

    path = r.out / "evaluation.json"
    known = _read_json(path)
    png = r.out / "evaluation_confusion.png"
    if known is not None and (known.get("split") is None or png.exists()):
        r.done("evaluate", _eval_line(known, path), already=True)
        return path, known
    split = _held_out(fp)
    if split is None:
        doc = {"split": None, "note": "no held-out split (no labelled test or val): not evaluated"}
        _write_json(path, doc)
        r.done("evaluate", f"skipped: {doc['note']}; {path.name} says so")
        return path, doc
    seg = Segmenter(load_model(best), device=r.device)
    result = evaluate(seg, r.spec, split, batch_size=4, num_workers=0, progress=r.progress)
    write_report(result, path)  # evaluation.json, then evaluation_confusion.png
    doc = report_dict(result)
    if split == "val":
        doc["note"] = "no test split: scored on val, which also chose best.ckpt (optimistic)"
        _write_json(path, doc)
    r.done("evaluate", _eval_line(doc, path))
    return path, doc


def _eval_line(doc: dict[str, Any], path: Path) -> str:
    if doc.get("split") is None:
        return f"{path.name}: {doc.get('note', 'not evaluated')}"
    miou = doc.get("miou")
    score = "—" if miou is None else f"{100 * miou:.2f}%"
    return f"{doc['split']} mIoU {score} on {doc.get('num_images')} image(s) -> {path.name}"


def _step_bundle(r: _Run, best: Path, name: str, doc: dict[str, Any], recipe: Path) -> Path:
    from ..engine.bundle import write_bundle
    from ..engine.loading import load_model

    path = r.out / f"{name}.json"
    if _read_json(path) is not None and (r.out / f"{name}.safetensors").exists():
        r.done("bundle", f"{path.name}", already=True)
        return path
    from ..config import load_config

    crop = tuple(int(s) for s in load_config(recipe).augment.crop_size)
    scores = {k: doc.get(k) for k in ("split", "miou", "mean_dice", "pixel_accuracy")}
    extra = {"made_by": "pixelwise auto", "recipe": recipe.name, "evaluation": scores}
    write_bundle(load_model(best), r.out, name, input_size=crop, extra=extra)  # type: ignore[arg-type]
    r.done("bundle", f"{path.name} + {name}.safetensors")
    return path


def run_auto(
    data: str | Path,
    out: str | Path,
    *,
    budget_seconds: float,
    device: str = "auto",
    measure: bool = True,
    progress: bool = True,
    bundle_name: str | None = None,
    max_epochs: int | None = None,
    search: bool = False,
    trials: int | None = None,
    say: Callable[[str], None] = print,
) -> AutoResult:
    """Fingerprint ``data``, plan a recipe for ``budget_seconds``, (search,) train, evaluate, bundle
    and report into ``out``; a step whose result is in ``out`` already is skipped (docs/auto.md).

    Args:
        data: a dataset YAML or folder.
        out: the output folder (created); re-running with it continues where it stopped.
        budget_seconds: wall-clock seconds for the whole run; training stops after the epoch that
            passes its share (1 - ``EVAL_SHARE``, less the time spent before training).
        device: ``auto``, ``cpu``, ``cuda[:N]``.
        measure: time 3 steps of the first plan and re-plan with the measured step time.
        progress: progress bars while training and evaluating.
        bundle_name: the bundle's name (default: the dataset's name, sanitised).
        max_epochs: at most this many epochs whatever fits the budget (smoke runs, tests).
        search: between plan and train, compare candidate recipes for
            :data:`~pixelwise.auto.search.SEARCH_SHARE` of the budget and train the best on
            validation (needs optuna: ``pip install 'pixelwise[auto]'``; docs/auto.md).
        trials: with ``search``, how many candidates to try (default
            :data:`~pixelwise.auto.search.DEFAULT_TRIALS`).
        say: called with one line per step as it happens.
    """
    if budget_seconds <= 0:
        raise PixelwiseError(f"budget_seconds must be > 0, got {budget_seconds}")
    if max_epochs is not None and max_epochs < 1:
        raise PixelwiseError(f"max_epochs must be >= 1, got {max_epochs}")
    n_trials = _search_trials(search, trials)
    spec = load_dataset_spec(data)
    r = _Run(spec, Path(out), budget_seconds, device, measure, progress, max_epochs, say, n_trials)
    r.out.mkdir(parents=True, exist_ok=True)
    name = bundle_name or bundle_name_for(r.spec.name)
    from ..pretrained import is_bundle_name

    if not is_bundle_name(name):
        raise PixelwiseError(f"--name {name!r}: use letters, digits, '_' and '-' only")
    fp = _step_fingerprint(r)
    if r.trials is not None:
        _check_search_possible(r, fp)
    recipe, plan_doc = _step_plan(r, fp)
    if r.trials is not None:
        search_doc = _step_search(r, fp, plan_doc, r.trials)
    else:  # a run that searched before: recipe.yaml is the search's
        search_doc = _read_json(r.out / "search.json")
    if search_doc is not None and "final" in search_doc:
        plan_doc = search_doc["final"]  # what recipe.yaml holds now
    best = _step_train(r, recipe)
    evaluation, doc = _step_evaluate(r, fp, best)
    bundle = _step_bundle(r, best, name, doc, recipe)
    from .report import write_auto_report

    report, fresh = write_auto_report(
        r.out, r.spec, fp, plan_doc, doc, best, device=r.device, search=search_doc
    )
    r.done("report", f"{report.name}, samples/, curves.png", already=not fresh)
    searched = r.out / "search.json" if search_doc is not None else None
    return AutoResult(
        r.out, dict(r.steps), list(r.skipped), bundle, evaluation, report, search=searched
    )


def _search_trials(search: bool, trials: int | None) -> int | None:
    """The number of candidates to try (``None``: no search); checks optuna is there first."""
    if not search:
        if trials is not None:
            raise PixelwiseError(f"--trials {trials} is for --search: add --search")
        return None
    from .search import DEFAULT_TRIALS, check_trials, require_optuna

    require_optuna()
    return check_trials(DEFAULT_TRIALS if trials is None else trials)
