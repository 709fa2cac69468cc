"""``pixelwise auto --search``: a few candidate recipes compared within the time budget, weak ones
stopped early by an Optuna pruner, the best on validation becoming the recipe that is trained.

The candidates (:func:`candidates`) are the rule-based plan and the variants a practitioner would
try next: the other architecture family, the other loss, half and twice the learning rate. They run
in that order as Optuna trials (Akiba et al., "Optuna: A Next-generation Hyperparameter
Optimization Framework", KDD 2019), each rescheduled for an equal share of :data:`SEARCH_SHARE` of
the budget, guarded by :class:`~pixelwise.auto.run.DeadlineStop`, and reporting its best validation
mIoU so far after every validation (:class:`PruneOnValidation`) to a
:class:`~optuna.pruners.SuccessiveHalvingPruner` (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020) whose steps are percents of the trial's planned epochs.

The study lives in ``<out>/search/journal.log`` (a journal file), so a killed search re-run with the
same command keeps its finished trials and retries the interrupted one (resumed from its
``last.ckpt``). docs/auto.md describes the files and the rules.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._atomic import atomic_path
from ..config import RunConfig, load_config
from ..engine.callbacks import Callback
from ..errors import PixelwiseError, first_line
from .fingerprint import Fingerprint
from .plan import (
    EVAL_SHARE,
    Plan,
    epochs_for_budget,
    lite_weights_available,
    measure_step_seconds,
    with_epochs,
)

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_TRIALS",
    "SEARCH_SHARE",
    "Candidate",
    "PruneOnValidation",
    "candidates",
    "check_trials",
    "choose_winner",
    "final_plan",
    "make_pruner",
    "require_optuna",
    "reschedule",
    "run_search",
]

SEARCH_SHARE = 0.4  # of the whole budget, shared equally by the trials
DEFAULT_TRIALS = 4
MIN_TRIALS = 2
MAX_TRIALS = 6  # as many as candidates() lists
MIN_RESOURCE = 25  # the pruner's rungs: 25% and 50% of a trial's planned epochs (100% is its end)
REDUCTION_FACTOR = 2  # a trial goes on when it is in the better half of those at its rung
SEED = 0
STUDY = "pixelwise-auto-search"
_SCORED = ("complete", "pruned")


@dataclass(frozen=True)
class Candidate:
    """A recipe to try: ``name`` (also its folder under ``search/``), what differs from the plan
    in one line, and the recipe (not yet rescheduled for the trial's time)."""

    name: str
    description: str
    recipe: RunConfig


def require_optuna() -> ModuleType:
    """The ``optuna`` module, or a one-line error naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise PixelwiseError(
            "--search needs the optuna package: pip install 'pixelwise[auto]'"
        ) from None
    return optuna


def check_trials(trials: int) -> int:
    """``trials`` when it is from :data:`MIN_TRIALS` to :data:`MAX_TRIALS`, else a one-line error."""
    if not MIN_TRIALS <= trials <= MAX_TRIALS:
        raise PixelwiseError(f"--trials {trials}: use {MIN_TRIALS} to {MAX_TRIALS}")
    return trials


def make_pruner() -> optuna.pruners.BasePruner:
    """Asynchronous successive halving: at 25% and 50% of its planned epochs a trial goes on only
    when its best validation mIoU so far is in the better half of the trials that reached that
    point (the first trial always goes on)."""
    optuna = require_optuna()
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=MIN_RESOURCE, reduction_factor=REDUCTION_FACTOR
    )


# ---- the candidates -------------------------------------------------------------------------------


def _other_architecture(recipe: RunConfig, fp: Fingerprint | None) -> tuple[RunConfig, str]:
    """U-Net (base 32) ↔ DeepLab v3+ on EfficientNet-Lite0, with the plan's rules for that family
    (weights and normalisation, learning rate)."""
    cfg = recipe.model_copy(deep=True)
    channels = len(recipe.normalize.mean or [0.0] * 3)
    stats = (fp.intensity_mean, [max(s, 1e-3) for s in fp.intensity_std]) if fp else None
    if recipe.model.name != "unet":
        cfg.model.name, cfg.model.params = "unet", {"base_channels": 32}
        cfg.optim.lr = 2e-3
        if stats is not None:
            cfg.normalize.mean, cfg.normalize.std = stats
        return cfg, "U-Net (base 32) from scratch, lr 2e-3, instead of DeepLab v3+"
    params: dict[str, Any] = {"encoder": "tf_efficientnet_lite0", "output_stride": 16}
    params["aspp_channels"] = 128
    weights = lite_weights_available()
    if weights:
        params["encoder_weights"] = "imagenet"
        cfg.normalize.mean, cfg.normalize.std = [0.5] * channels, [0.5] * channels
    cfg.model.name, cfg.model.params = "deeplabv3plus", params
    cfg.optim.lr = 1e-3
    init = "ImageNet weights" if weights else "from scratch"
    return (
        cfg,
        f"DeepLab v3+ on EfficientNet-Lite0 (OS 16, ASPP 128, {init}), lr 1e-3, instead of U-Net",
    )


def _other_loss(recipe: RunConfig) -> tuple[RunConfig, str]:
    cfg = recipe.model_copy(deep=True)
    names = [t.name for t in recipe.loss.terms]
    if "dice" in names:
        cfg.loss.terms = [t for t in cfg.loss.terms if t.name != "dice"] or [cfg.loss.terms[0]]
        return cfg, "loss without Dice (" + " + ".join(t.name for t in cfg.loss.terms) + ")"
    cfg.loss.terms = [*cfg.loss.terms, cfg.loss.terms[0].model_copy(update={"name": "dice"})]
    return cfg, "loss " + " + ".join(t.name for t in cfg.loss.terms) + " (Dice added)"


def _lr_times(recipe: RunConfig, factor: float) -> tuple[RunConfig, str]:
    cfg = recipe.model_copy(deep=True)
    cfg.optim.lr = recipe.optim.lr * factor
    return cfg, f"learning rate x{factor:g} ({cfg.optim.lr:g} instead of {recipe.optim.lr:g})"


def candidates(recipe: RunConfig, fp: Fingerprint | None = None) -> list[Candidate]:
    """The candidates for a planned ``recipe``, in the order they are tried (``--trials N`` takes
    the first N): the plan, the other architecture, the other loss, lr x0.5, lr x2, and the other
    architecture with the other loss. ``fp`` gives a from-scratch U-Net the dataset's mean/std
    (without it, the plan's normalisation is kept)."""
    arch, why_arch = _other_architecture(recipe, fp)
    loss, why_loss = _other_loss(recipe)
    arch_loss, why_both = _other_loss(arch)
    half, why_half = _lr_times(recipe, 0.5)
    double, why_double = _lr_times(recipe, 2.0)
    return [
        Candidate("plan", "the rule-based plan, unchanged", recipe.model_copy(deep=True)),
        Candidate("arch", why_arch, arch),
        Candidate("loss", why_loss, loss),
        Candidate("lr_x0.5", why_half, half),
        Candidate("lr_x2", why_double, double),
        Candidate("arch_loss", f"{why_arch}; {why_both}", arch_loss),
    ]


def reschedule(
    recipe: RunConfig,
    *,
    budget_seconds: float,
    step_seconds: float,
    steps_per_epoch: int,
    max_epochs: int | None = None,
) -> tuple[RunConfig, str]:
    """``recipe`` with the epochs that fit ``budget_seconds`` (the plan's rule,
    :func:`~pixelwise.auto.plan.epochs_for_budget`), about :data:`VALIDATIONS` validations and a
    warm-up of 5% of the steps (at most 100); at most ``max_epochs`` epochs. Returns the reason."""
    epochs, why = epochs_for_budget(budget_seconds, step_seconds, steps_per_epoch)
    if max_epochs is not None and epochs > max_epochs:
        epochs, why = max_epochs, f"{why}; capped at {max_epochs} (max_epochs)"
    return with_epochs(recipe, epochs, steps_per_epoch), why


# ---- the pruning callback -------------------------------------------------------------------------


class PruneOnValidation(Callback):
    """Report the best validation mIoU so far to an Optuna trial after each validation, at step
    ``100 * epoch // epochs`` (percent of the planned epochs: trials of different lengths meet at
    the same rungs), and stop training after the epoch when the trial's pruner says so.

    On a resumed run, the validations already in ``metrics.csv`` are reported first. The last
    planned epoch is never pruned: a trial that trained to its end is complete.
    """

    def __init__(self, trial: optuna.trial.Trial, epochs: int) -> None:
        self.trial = trial
        self.epochs = epochs
        self.best: float | None = None
        self.history: list[dict[str, float]] = []  # {"epoch", "val_miou"} per validation
        self.pruned = False

    def on_train_start(self, state: Any) -> None:
        self.best, self.history = None, []
        reported = [self._record(row) for row in state.rows]
        if any(reported) and state.epoch < self.epochs:
            self._check(state)

    def on_epoch_end(self, state: Any, row: dict[str, Any]) -> None:
        if self._record(row) and state.epoch < self.epochs:
            self._check(state)

    def _record(self, row: dict[str, Any]) -> bool:
        score = row.get("val_miou", "")
        if score in ("", None):
            return False
        epoch, score = int(row["epoch"]), float(score)
        self.history.append({"epoch": epoch, "val_miou": score})
        if not math.isnan(score):
            self.best = score if self.best is None else max(self.best, score)
        if self.best is None:
            return False
        self.trial.report(self.best, 100 * epoch // self.epochs)
        return True

    def _check(self, state: Any) -> None:
        if self.trial.should_prune():
            self.pruned = True
            state.stop_training = True


# ---- one search -----------------------------------------------------------------------------------


@dataclass
class _Search:
    """What the trials share."""

    optuna: ModuleType
    study: optuna.study.Study
    root: Path
    by_name: dict[str, Candidate]  # every candidate: the categorical choice's values
    tried: list[str]  # the first --trials of them
    plan_step: float  # the plan's step seconds
    plan_measured: bool
    steps_per_epoch: int
    trial_seconds: float
    measure: bool
    progress: bool
    max_epochs: int | None


def _candidate_of(t: optuna.trial.FrozenTrial) -> str | None:
    """A trial's candidate, also for a waiting (enqueued) one."""
    return t.params.get("candidate") or t.system_attrs.get("fixed_params", {}).get("candidate")


def _settled(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial decided its candidate: complete, pruned, or failed with an error (not
    interrupted by Ctrl-C or a kill: those are tried again)."""
    from optuna.trial import TrialState

    done = t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    return done or (t.state == TrialState.FAIL and "error" in t.user_attrs)


def _open_study(
    optuna: ModuleType, root: Path, choices: list[str], names: list[str]
) -> optuna.study.Study:
    """The study in ``root/journal.log``, created or loaded to continue, over the categorical
    ``choices`` (all candidates: Optuna fixes a parameter's choices per study), trying ``names``.
    A trial still running in it was left so by a killed process: it is marked failed
    (interrupted), to be tried again."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    root.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(root / "journal.log")))
    sampler = optuna.samplers.GridSampler({"candidate": choices}, seed=SEED)
    study = optuna.create_study(
        study_name=STUDY,
        storage=storage,
        direction="maximize",
        sampler=sampler,
        pruner=make_pruner(),
        load_if_exists=True,
    )
    known = study.user_attrs.get("candidates", names)
    if known != names[: len(known)]:
        raise PixelwiseError(
            f"{root} holds a search over {', '.join(known)}: run with --trials {len(known)} or "
            f"more, or delete {root}"
        )
    study.set_user_attr("candidates", names)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return study


def _step_time(s: _Search, cand: Candidate) -> tuple[float, bool, str]:
    """Seconds per step of ``cand``, whether measured, and how it was found: the plan's when the
    model is the plan's; else measured (``measure``) or assumed equal to the plan's. Kept in the
    study, so a continued search reuses it."""
    key = f"step_seconds:{cand.name}"
    if key not in s.study.user_attrs:
        found = [s.plan_step, s.plan_measured, "the plan's step time, same model"]
        if cand.recipe.model != s.by_name["plan"].recipe.model:
            found[2] = "the plan's step time, assumed for another model (not measured)"
            if s.measure:
                found = [measure_step_seconds(cand.recipe), True, "measured for this model"]
        s.study.set_user_attr(key, found)
    step, measured, how = s.study.user_attrs[key]
    return float(step), bool(measured), str(how)


def _trial_recipe(s: _Search, cand: Candidate) -> tuple[RunConfig, float, bool]:
    """The trial's recipe, ``search/<name>.yaml``, written once (a retried trial resumes with the
    same schedule); its step seconds and whether they were measured."""
    step, measured, how = _step_time(s, cand)
    path = s.root / f"{cand.name}.yaml"
    if path.exists():
        return load_config(path), step, measured
    cfg, why = reschedule(
        cand.recipe,
        budget_seconds=s.trial_seconds,
        step_seconds=step,
        steps_per_epoch=s.steps_per_epoch,
        max_epochs=s.max_epochs,
    )
    reasons = [f"search candidate {cand.name!r}: {cand.description}", f"step {step:.3g} s: {how}"]
    with atomic_path(path) as tmp:
        Plan(cfg, [*reasons, why]).write(tmp)
    return cfg, step, measured


def _run_trial(s: _Search, trial: optuna.trial.Trial, cand: Candidate) -> float:
    """Train one candidate into ``search/<name>/`` (resuming its ``last.ckpt``); its best
    validation mIoU, or :class:`optuna.TrialPruned`."""
    from ..engine.train import train
    from .run import DeadlineStop

    t0 = time.perf_counter()
    cfg, step, measured = _trial_recipe(s, cand)
    run_dir = s.root / cand.name
    deadline = DeadlineStop(max(1.0, s.trial_seconds - (time.perf_counter() - t0)))
    prune = PruneOnValidation(trial, cfg.train.epochs)
    resume = (run_dir / "last.ckpt").exists()
    result = train(cfg, run_dir, resume=resume, progress=s.progress, callbacks=[deadline, prune])
    attrs = {
        "val_miou": prune.history,
        "epochs": max((h["epoch"] for h in prune.history), default=0),
        "planned_epochs": cfg.train.epochs,
        "stopped_at_deadline": deadline.reached,
        "step_seconds": step,
        "step_measured": measured,
        "resumed": resume,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if prune.pruned:
        raise s.optuna.TrialPruned(f"{cand.name}: pruned after epoch {attrs['epochs']}")
    best = result.best_miou if result.best_miou is not None else prune.best
    return math.nan if best is None else float(best)


def _objective(s: _Search) -> Callable[[optuna.trial.Trial], float]:
    names = list(s.by_name)

    def objective(trial: optuna.trial.Trial) -> float:
        cand = s.by_name[trial.suggest_categorical("candidate", names)]
        try:
            return _run_trial(s, trial, cand)
        except s.optuna.TrialPruned:
            raise
        except Exception as exc:  # noqa: BLE001 - the trial fails, the search goes on
            trial.set_user_attr("error", first_line(exc))
            raise

    return objective


@contextlib.contextmanager
def _quiet(optuna: ModuleType) -> Iterator[None]:
    """Optuna logs errors only while searching: the search prints its own one line per trial."""
    was = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(was)


def _trial_doc(t: optuna.trial.FrozenTrial, by_name: dict[str, Candidate]) -> dict[str, Any]:
    """A finished trial as ``search.json`` lists it."""
    name = str(_candidate_of(t))
    state = t.state.name.lower()
    if state == "fail":
        state = "failed" if "error" in t.user_attrs else "interrupted"
    values = [v for v in t.intermediate_values.values() if not math.isnan(v)]
    best = t.value if state == "complete" else max(values, default=None)
    doc = {"number": t.number, "candidate": name, "description": by_name[name].description}
    doc |= {"state": state, "best_val_miou": best, "attempt": t.user_attrs.get("attempt", 1)}
    keys = ("val_miou", "epochs", "planned_epochs", "seconds", "step_seconds", "step_measured")
    doc |= {k: t.user_attrs.get(k) for k in (*keys, "stopped_at_deadline", "resumed", "error")}
    return {k: v for k, v in doc.items() if v is not None}


def _trial_line(doc: dict[str, Any], tried: list[str]) -> str:
    """The line printed after a trial: which candidate (of how many), its state, score, time."""
    best = doc.get("best_val_miou")
    score = "—" if best is None else f"{100 * best:.2f}%"
    what = doc["state"] if doc["state"] != "failed" else f"failed: {doc.get('error')}"
    epochs = f"{doc.get('epochs', 0)}/{doc.get('planned_epochs', '?')} epoch(s)"
    again = f", attempt {doc['attempt']}" if doc.get("attempt", 1) > 1 else ""
    return (
        f"search: candidate {tried.index(doc['candidate']) + 1} of {len(tried)}{again}, "
        f"{doc['candidate']!r} ({doc['description']}): {what}, {epochs}, best val mIoU {score}, "
        f"{doc.get('seconds', 0):.0f} s"
    )


def run_search(
    plan_doc: dict[str, Any],
    root: str | Path,
    *,
    budget_seconds: float,
    trials: int = DEFAULT_TRIALS,
    fp: Fingerprint | None = None,
    measure: bool = True,
    progress: bool = True,
    max_epochs: int | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Try the first ``trials`` :func:`candidates` of the planned recipe (``plan_doc``, as
    ``plan.json`` holds it) in ``root``, each for ``SEARCH_SHARE * budget_seconds / trials``
    seconds; continue the search already in ``root``. Returns ``search.json``'s content without
    the final plan (:func:`final_plan`). Trials start while the finished ones have used less than
    the search's share; the rest are listed as not tried.

    Raises:
        PixelwiseError: optuna is missing, the plan has no validation split, ``trials`` is out of
            range, or ``root`` holds a search over other candidates.
    """
    optuna = require_optuna()
    recipe = RunConfig.model_validate(plan_doc["recipe"])
    if not recipe.data.val_split:
        raise PixelwiseError(
            f"--search chooses on a validation split, and dataset {recipe.data.dataset} has no "
            "labelled 'val' split: add one, or run without --search"
        )
    cands = candidates(recipe, fp)
    tried = [c.name for c in cands[: check_trials(trials)]]
    root = Path(root)
    est = plan_doc.get("estimates", {})
    share = SEARCH_SHARE * budget_seconds
    with _quiet(optuna):
        study = _open_study(optuna, root, [c.name for c in cands], tried)
        s = _Search(
            optuna=optuna,
            study=study,
            root=root,
            by_name={c.name: c for c in cands},
            tried=tried,
            plan_step=float(est["step_seconds"]),
            plan_measured=bool(est.get("measured", False)),
            steps_per_epoch=int(est.get("steps_per_epoch", 1)),
            trial_seconds=share / trials,
            measure=measure,
            progress=progress,
            max_epochs=max_epochs,
        )
        not_tried = _optimize(s, share, say)
    return _search_doc(s, share, not_tried)


def _optimize(s: _Search, share: float, say: Callable[[str], None]) -> list[str]:
    """Try the candidates in order, one trial at a time, each queued (``enqueue_trial``) when its
    turn comes: a candidate without a settled trial is tried (again), while the trials so far used
    less than ``share`` seconds. Returns the candidates left untried."""
    from optuna.trial import TrialState

    while True:
        trials = s.study.get_trials(deepcopy=False)
        settled = {_candidate_of(t) for t in trials if _settled(t)}
        todo = [name for name in s.tried if name not in settled]
        spent = sum(t.user_attrs.get("seconds", 0.0) for t in trials)
        if todo and spent >= share:
            say(f"search: {spent:.0f} s used of its {share:.0f} s: {', '.join(todo)} not tried")
        if not todo or spent >= share:
            return todo
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if not waiting:  # else a kill came between queueing and starting it
            attempt = 1 + sum(_candidate_of(t) == todo[0] for t in trials)
            s.study.enqueue_trial({"candidate": todo[0]}, user_attrs={"attempt": attempt})
        number = min([t.number for t in waiting], default=len(trials))  # the one optuna starts
        s.study.optimize(_objective(s), n_trials=1, catch=(Exception,))
        ran = next(t for t in s.study.get_trials(deepcopy=False) if t.number == number)
        say(_trial_line(_trial_doc(ran, s.by_name), s.tried))


def _search_doc(s: _Search, share: float, not_tried: list[str]) -> dict[str, Any]:
    trials = s.study.get_trials(deepcopy=False)
    named = [t for t in trials if _candidate_of(t) in s.by_name]  # not those killed at the start
    done = [_trial_doc(t, s.by_name) for t in named if t.state.is_finished()]
    winner = choose_winner(done, list(s.by_name))
    return {
        "candidates": [{"name": n, "description": s.by_name[n].description} for n in s.tried],
        "share_seconds": round(share, 3),
        "trial_seconds": round(s.trial_seconds, 3),
        "pruner": (
            f"SuccessiveHalvingPruner(min_resource={MIN_RESOURCE}, "
            f"reduction_factor={REDUCTION_FACTOR}); steps are percents of a trial's planned epochs"
        ),
        "rule": (
            "the complete trial with the highest best validation mIoU (ties: the earlier "
            "candidate); pruned trials only when none completed"
        ),
        "trials": done,
        "not_tried": not_tried,
        "winner": None if winner is None else winner["candidate"],
    }


def choose_winner(trials: list[dict[str, Any]], order: list[str]) -> dict[str, Any] | None:
    """The trial to train: the highest best validation mIoU among the complete trials (a tie goes
    to the candidate listed first, so the plan wins its ties); among the pruned trials only when
    none completed; ``None`` when every trial failed."""
    scored = [t for t in trials if t.get("best_val_miou") is not None]
    scored = [t for t in scored if not math.isnan(t["best_val_miou"])]
    for state in _SCORED:
        pool = [t for t in scored if t["state"] == state]
        if pool:
            return max(pool, key=lambda t: (t["best_val_miou"], -order.index(t["candidate"])))
    return None


def final_plan(
    plan_doc: dict[str, Any],
    search_doc: dict[str, Any],
    root: str | Path,
    *,
    train_seconds: float,
    max_epochs: int | None = None,
) -> Plan:
    """The winner's recipe (``root/<winner>.yaml``) rescheduled so that its training fits
    ``train_seconds`` (the time left for training after the search), with the plan's reasons and
    the search's; its estimates are the plan's (``budget_seconds``: the whole run's) with the
    winner's step time, epochs and ``train_seconds``. Raises a one-line error when every trial
    failed."""
    name = search_doc.get("winner")
    if name is None:
        errors = [t.get("error") for t in search_doc["trials"] if t.get("error")]
        first = f" (first error: {errors[0]})" if errors else ""
        raise PixelwiseError(
            f"search: no trial finished with a validation score{first}; delete {root} to search "
            "again, or run without --search to train the plan"
        )
    won = next(t for t in search_doc["trials"] if t["candidate"] == name and t["state"] in _SCORED)
    est = dict(plan_doc.get("estimates", {}))
    step = float(won.get("step_seconds", est["step_seconds"]))
    budget = max(train_seconds, 1.0) / (1 - EVAL_SHARE)
    recipe = load_config(Path(root) / f"{name}.yaml")
    spe = int(est.get("steps_per_epoch", 1))
    cfg, why = reschedule(
        recipe, budget_seconds=budget, step_seconds=step, steps_per_epoch=spe, max_epochs=max_epochs
    )
    plan = next((t for t in search_doc["trials"] if t["candidate"] == "plan"), None)
    base = "" if plan is None or plan is won else f"; the plan {_pct(plan.get('best_val_miou'))}"
    counts = {s: sum(t["state"] == s for t in search_doc["trials"]) for s in ("complete", "pruned")}
    reasons = [
        *plan_doc.get("reasons", []),
        f"search: {len(search_doc['trials'])} trial(s) of {search_doc['trial_seconds']:.0f} s "
        f"({SEARCH_SHARE:.0%} of the budget shared out), {counts['complete']} complete, "
        f"{counts['pruned']} pruned by successive halving (search.json)",
        f"chosen {name!r} ({won['description']}): best val mIoU {_pct(won.get('best_val_miou'))}"
        f"{base}; rule: {search_doc['rule']}",
        f"the chosen recipe rescheduled for the time left after the search: {why}",
    ]
    est |= {"step_seconds": step, "measured": bool(won.get("step_measured", est.get("measured")))}
    est |= {"epochs": cfg.train.epochs, "train_seconds": round(max(train_seconds, 0.0), 3)}
    return Plan(cfg, reasons, est | {"search_winner": name})


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"
