"""``pixelwise auto --search``: the candidates, the pruner (hand-checked rungs), the winner, resuming
a search, its one-line errors, and one real run through the CLI."""

from __future__ import annotations

import importlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import study_dataset, toy_dataset

from pixelwise.auto import fingerprint, plan
from pixelwise.auto.search import (
    PruneOnValidation,
    candidates,
    choose_winner,
    final_plan,
    make_pruner,
    reschedule,
    run_search,
)
from pixelwise.cli import main
from pixelwise.config import RunConfig, load_config
from pixelwise.engine.train import TrainResult
from pixelwise.errors import PixelwiseError

optuna = pytest.importorskip("optuna")
engine_train = importlib.import_module("pixelwise.engine.train")  # the module, not the function

# with a 1e5 s budget and 1 s per step, every trial fits far more than MAX_EPOCHS
BUDGET, MAX_EPOCHS = 1e5, 4


@pytest.fixture(scope="module")
def plan_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """plan.json's content for the 4-class study dataset: 1 step of 1 s per epoch."""
    data = study_dataset(tmp_path_factory.mktemp("search") / "ds")
    doc = plan(fingerprint(data), budget_seconds=BUDGET, device="cpu", step_seconds=1.0).to_dict()
    assert doc["estimates"]["steps_per_epoch"] == 1  # 4 training images, batch 4
    return doc


def scripted_train(
    scores: dict[str, list[float]], calls: list[tuple[str, bool]], interrupt: str | None = None
) -> Callable[..., TrainResult]:
    """A stand-in for ``engine.train.train``: each epoch's validation mIoU comes from ``scores``
    (by the run folder's name, the candidate); the callbacks see the events a real run sends;
    ``last.ckpt`` holds the rows, so a resumed run continues them. ``interrupt``: that candidate
    is stopped by Ctrl-C (KeyboardInterrupt) before its second epoch, once."""

    def train(cfg: RunConfig, run_dir: Path, *, resume: bool, progress: bool, callbacks: list):  # noqa: ANN202
        nonlocal interrupt
        name, run_dir = Path(run_dir).name, Path(run_dir)
        calls.append((name, resume))
        rows = json.loads((run_dir / "last.ckpt").read_text()) if resume else []
        state = SimpleNamespace(epoch=len(rows), rows=rows, stop_training=False, cfg=cfg)
        for cb in callbacks:
            cb.on_train_start(state)
        while state.epoch < cfg.train.epochs and not state.stop_training:
            if name == interrupt and state.epoch == 1:
                interrupt = None
                raise KeyboardInterrupt
            state.epoch += 1
            row = {"epoch": state.epoch, "val_miou": scores[name][state.epoch - 1]}
            state.rows.append(row)
            for cb in callbacks:
                cb.on_epoch_end(state, row)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "last.ckpt").write_text(json.dumps(state.rows))
        best = max(r["val_miou"] for r in state.rows)
        return TrainResult(run_dir, state.epoch, state.epoch, best, None, 0.0)

    return train


def _search(plan_doc: dict[str, Any], root: Path, trials: int, **kw: Any) -> dict[str, Any]:
    kw = {"measure": False, "max_epochs": MAX_EPOCHS, "say": lambda _: None, **kw}
    return run_search(plan_doc, root, budget_seconds=BUDGET, trials=trials, **kw)


def _states(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["candidate"], t["state"]) for t in doc["trials"]]


# ---- the candidates and the schedule ------------------------------------------------------------


def test_candidates_differ_from_the_plan_in_one_thing(plan_doc: dict[str, Any]) -> None:
    recipe = RunConfig.model_validate(plan_doc["recipe"])
    assert recipe.model.name == "deeplabv3plus" and [t.name for t in recipe.loss.terms] == ["ce"]
    cands = {c.name: c for c in candidates(recipe)}
    assert list(cands) == ["plan", "arch", "loss", "lr_x0.5", "lr_x2", "arch_loss"]
    assert cands["plan"].recipe == recipe
    arch = cands["arch"].recipe
    assert (arch.model.name, arch.model.params, arch.optim.lr) == (
        "unet",
        {"base_channels": 32},
        2e-3,
    )
    assert arch.loss == recipe.loss and arch.augment == recipe.augment
    assert [t.name for t in cands["loss"].recipe.loss.terms] == ["ce", "dice"]
    assert cands["loss"].recipe.model == recipe.model
    assert cands["lr_x0.5"].recipe.optim.lr == recipe.optim.lr / 2
    assert cands["lr_x2"].recipe.optim.lr == recipe.optim.lr * 2
    both = cands["arch_loss"].recipe
    assert both.model.name == "unet" and [t.name for t in both.loss.terms] == ["ce", "dice"]
    # and back: from a U-Net plan with CE + Dice, the other family is DeepLab v3+, the loss CE
    unet = candidates(both)
    assert unet[1].recipe.model.name == "deeplabv3plus" and unet[1].recipe.optim.lr == 1e-3
    assert [t.name for t in unet[2].recipe.loss.terms] == ["ce"]
    assert all(c.description for c in unet)


def test_reschedule_fits_the_budget() -> None:
    recipe = RunConfig(data={"dataset": "x"})
    # 85 s of training in a 100 s budget at 2 s x 5 steps per epoch: 8 epochs
    cfg, why = reschedule(recipe, budget_seconds=100, step_seconds=2.0, steps_per_epoch=5)
    assert (cfg.train.epochs, cfg.train.val_every, cfg.schedule.warmup_iters) == (8, 1, 2)
    assert why.startswith("epochs 8:")
    cfg, why = reschedule(
        recipe, budget_seconds=1e4, step_seconds=1.0, steps_per_epoch=10, max_epochs=300
    )
    assert (cfg.train.epochs, cfg.train.val_every, cfg.schedule.warmup_iters) == (300, 30, 100)
    assert "capped at 300" in why
    assert recipe.train.epochs == 50  # the input is not changed


# ---- the pruner ---------------------------------------------------------------------------------


def _feed(study: Any, scores: list[float]) -> tuple[Any, int]:
    """One trial fed ``scores`` (one validation per epoch) through the callback; its state and the
    epochs trained."""
    trial = study.ask()
    cb = PruneOnValidation(trial, epochs=len(scores))
    state = SimpleNamespace(epoch=0, rows=[], stop_training=False)
    cb.on_train_start(state)
    while state.epoch < len(scores) and not state.stop_training:
        state.epoch += 1
        cb.on_epoch_end(state, {"epoch": state.epoch, "val_miou": scores[state.epoch - 1]})
    if cb.pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, cb.best)
    return study.trials[-1].state, state.epoch


def test_pruner_stops_the_weaker_half() -> None:
    """4 epochs: steps 25, 50, 75, 100; rungs at 25 and 50 (100 is the last epoch, never pruned).
    A trial goes on at a rung when its best so far is at least the k-th best there,
    k = max(1, n // 2) of the n trials that reached it."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner())
    complete, pruned = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    assert _feed(study, [0.5, 0.6, 0.7, 0.8]) == (complete, 4)  # the first always goes on
    assert _feed(study, [0.3, 0.9, 0.9, 0.9]) == (pruned, 1)  # 0.3 < 0.5 at 25
    assert _feed(study, [0.55, 0.65, 0.75, 0.85]) == (complete, 4)  # the best at 25 and at 50
    # at 25: 0.52 >= the 2nd best of (0.5, 0.3, 0.55, 0.52); at 50: 0.58 < the best of (0.6, 0.65, 0.58)
    assert _feed(study, [0.52, 0.58, 0.9, 0.9]) == (pruned, 2)
    assert [t.intermediate_values for t in study.trials][3] == {25: 0.52, 50: 0.58}


def test_search_prunes_and_chooses_on_validation(
    plan_doc: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = {
        "plan": [0.5, 0.6, 0.7, 0.8],
        "arch": [0.3, 0.9, 0.9, 0.9],
        "loss": [0.55, 0.65, 0.75, 0.85],
        "lr_x0.5": [0.52, 0.58, 0.9, 0.9],
    }
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(engine_train, "train", scripted_train(scores, calls))
    lines: list[str] = []
    doc = _search(plan_doc, tmp_path / "search", 4, say=lines.append)
    assert _states(doc) == [
        ("plan", "complete"),
        ("arch", "pruned"),
        ("loss", "complete"),
        ("lr_x0.5", "pruned"),
    ]
    assert [t["epochs"] for t in doc["trials"]] == [4, 1, 4, 2]
    assert doc["trials"][3]["val_miou"] == [
        {"epoch": 1, "val_miou": 0.52},
        {"epoch": 2, "val_miou": 0.58},
    ]
    assert doc["winner"] == "loss" and doc["trials"][2]["best_val_miou"] == 0.85
    assert doc["not_tried"] == [] and doc["trial_seconds"] == 0.4 * BUDGET / 4
    assert calls == [("plan", False), ("arch", False), ("loss", False), ("lr_x0.5", False)]
    assert len(lines) == 4 and lines[1].startswith("search: candidate 2 of 4, 'arch' (")
    assert "pruned, 1/4 epoch(s), best val mIoU 30.00%" in lines[1]
    trial_recipe = load_config(tmp_path / "search" / "loss.yaml")
    assert trial_recipe.train.epochs == MAX_EPOCHS
    assert [t.name for t in trial_recipe.loss.terms] == ["ce", "dice"]

    # the winner, rescheduled: 85 s of training at 1 s per step, 1 step per epoch
    final = final_plan(plan_doc, doc, tmp_path / "search", train_seconds=85.0)
    assert final.recipe.train.epochs == 85 and final.recipe.train.val_every == 8
    assert [t.name for t in final.recipe.loss.terms] == ["ce", "dice"]
    assert final.recipe.model == trial_recipe.model and final.estimates["search_winner"] == "loss"
    assert final.reasons[: len(plan_doc["reasons"])] == plan_doc["reasons"]
    assert any(r.startswith("chosen 'loss'") and "the plan 80.00%" in r for r in final.reasons)


def test_another_model_gets_its_own_step_time(
    plan_doc: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With measuring, the candidate with another model is timed (2 s per step here) and gets
    half the epochs; the others keep the plan's 1 s. 300 s x 40% / 3 trials = 40 s per trial,
    85% of it for training: 34 epochs of 1 step at 1 s, 17 at 2 s."""
    search = importlib.import_module("pixelwise.auto.search")
    timed: list[str] = []

    def measure(recipe: RunConfig) -> float:
        timed.append(recipe.model.name)
        return 2.0

    monkeypatch.setattr(search, "measure_step_seconds", measure)
    scores = {"plan": [0.5] * 34, "arch": [0.6] * 34, "loss": [0.4] * 34}
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(engine_train, "train", scripted_train(scores, calls))
    root = tmp_path / "search"
    doc = run_search(plan_doc, root, budget_seconds=300, trials=3, say=lambda _: None)
    assert timed == ["unet"]
    assert [load_config(root / f"{n}.yaml").train.epochs for n in scores] == [34, 17, 34]
    assert [t["step_seconds"] for t in doc["trials"]] == [1.0, 2.0, 1.0]
    assert "measured for this model" in (root / "arch.yaml").read_text()


def test_winner_rule() -> None:
    order = ["plan", "arch", "loss"]

    def t(name: str, state: str, best: float | None) -> dict[str, Any]:
        return {"candidate": name, "state": state, "best_val_miou": best}

    # a pruned trial never beats a complete one; a tie goes to the candidate listed first
    trials = [t("plan", "complete", 0.7), t("arch", "pruned", 0.9), t("loss", "complete", 0.7)]
    assert choose_winner(trials, order)["candidate"] == "plan"
    trials = [t("plan", "failed", None), t("arch", "pruned", 0.4), t("loss", "pruned", 0.6)]
    assert choose_winner(trials, order)["candidate"] == "loss"
    assert (
        choose_winner([t("plan", "failed", None), t("arch", "complete", math.nan)], order) is None
    )


# ---- resuming -----------------------------------------------------------------------------------


def test_interrupted_search_keeps_finished_trials(
    plan_doc: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the second trial: the re-run keeps the first, resumes the second from its
    last.ckpt (its first validation reported again) and runs the third."""
    scores = {"plan": [0.5, 0.6, 0.7, 0.8], "arch": [0.6, 0.7, 0.8, 0.9], "loss": [0.4] * 4}
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(engine_train, "train", scripted_train(scores, calls, interrupt="arch"))
    with pytest.raises(KeyboardInterrupt):
        _search(plan_doc, tmp_path / "search", 3)
    assert calls == [("plan", False), ("arch", False)]
    doc = _search(plan_doc, tmp_path / "search", 3)
    assert calls[2:] == [("arch", True), ("loss", False)]
    assert _states(doc) == [
        ("plan", "complete"),
        ("arch", "interrupted"),
        ("arch", "complete"),
        ("loss", "pruned"),
    ]
    assert doc["trials"][2]["attempt"] == 2 and doc["trials"][2]["resumed"] is True
    assert [v["epoch"] for v in doc["trials"][2]["val_miou"]] == [1, 2, 3, 4]
    assert doc["winner"] == "arch"
    # a third run has nothing left to train
    assert _search(plan_doc, tmp_path / "search", 3)["trials"] == doc["trials"]
    assert len(calls) == 4


def test_killed_trial_is_retried(
    plan_doc: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial left running by a killed process is marked interrupted and tried again."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    scores = {"plan": [0.5, 0.6, 0.7, 0.8], "arch": [0.6, 0.7, 0.8, 0.9]}
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(engine_train, "train", scripted_train(scores, calls, interrupt="plan"))
    root = tmp_path / "search"
    with pytest.raises(KeyboardInterrupt):
        _search(plan_doc, root, 2)
    storage = JournalStorage(JournalFileBackend(str(root / "journal.log")))
    study = optuna.load_study(study_name="pixelwise-auto-search", storage=storage)
    study.enqueue_trial({"candidate": "arch"})
    killed = study.ask()  # 'arch' starts, and its process dies
    names = [c.name for c in candidates(RunConfig.model_validate(plan_doc["recipe"]))]
    assert killed.number == 1 and killed.suggest_categorical("candidate", names) == "arch"
    doc = _search(plan_doc, root, 2)
    assert calls == [("plan", False), ("plan", True), ("arch", False)]
    assert _states(doc) == [
        ("plan", "interrupted"),
        ("arch", "interrupted"),
        ("plan", "complete"),
        ("arch", "complete"),
    ]


def test_fewer_trials_refused_more_extend(
    plan_doc: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = {"plan": [0.5] * 4, "arch": [0.6] * 4, "loss": [0.7] * 4, "lr_x0.5": [0.8] * 4}
    calls: list[tuple[str, bool]] = []
    monkeypatch.setattr(engine_train, "train", scripted_train(scores, calls))
    _search(plan_doc, tmp_path / "search", 3)
    with pytest.raises(PixelwiseError, match="--trials 3 or more") as exc:
        _search(plan_doc, tmp_path / "search", 2)
    assert "\n" not in str(exc.value)
    doc = _search(plan_doc, tmp_path / "search", 4)  # one more candidate: only it is trained
    assert [c for c, _ in calls] == ["plan", "arch", "loss", "lr_x0.5"]
    assert doc["winner"] == "lr_x0.5" and len(doc["trials"]) == 4


def test_failed_trials_are_recorded_not_retried(
    plan_doc: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def broken(cfg: RunConfig, run_dir: Path, **kw: Any) -> TrainResult:
        calls.append(Path(run_dir).name)
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    monkeypatch.setattr(engine_train, "train", broken)
    root = tmp_path / "search"
    doc = _search(plan_doc, root, 2)
    assert _states(doc) == [("plan", "failed"), ("arch", "failed")]
    assert doc["trials"][0]["error"] == "CUDA out of memory." and doc["winner"] is None
    assert _search(plan_doc, root, 2)["trials"] == doc["trials"] and calls == ["plan", "arch"]
    with pytest.raises(PixelwiseError, match="first error: CUDA out of memory") as exc:
        final_plan(plan_doc, doc, root, train_seconds=100.0)
    assert "\n" not in str(exc.value) and "without --search" in str(exc.value)


# ---- one-line errors ----------------------------------------------------------------------------


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


FAST = ["--time", "60s", "--max-epochs", "1", "--no-measure", "--quiet", "--device", "cpu"]


def test_no_val_split_stops_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = toy_dataset(tmp_path / "toy", n=4, size=16)
    out = tmp_path / "run"
    err = _one_line_error(["auto", str(data), "--out", str(out), "--search", *FAST], capsys)
    assert "no labelled 'val' split" in err and "without --search" in err
    assert {p.name for p in out.iterdir()} == {"fingerprint.json"}


def test_missing_optuna_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    data = study_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    err = _one_line_error(["auto", str(data), "--out", str(out), "--search", *FAST], capsys)
    assert "pip install 'pixelwise[auto]'" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--search", "--trials", "7"], "--trials 7: use 2 to 6"),
        (["--trials", "3"], "add --search"),
    ],
)
def test_bad_trials_is_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    err = _one_line_error(["auto", str(tmp_path), "--out", str(out), *extra, *FAST], capsys)
    assert message in err and not out.exists()


# ---- a real search through the command ----------------------------------------------------------


def test_auto_search_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two real trials of one epoch, the winner trained, evaluated, bundled and reported; the
    second run is done already."""
    data = study_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    # an hour: the search's time share never stops it here, however slow the machine
    fast = ["--time", "1h", *FAST[2:]]
    args = ["auto", str(data), "--out", str(out), "--search", "--trials", "2", *fast]
    main(args)
    text = capsys.readouterr().out
    doc = json.loads((out / "search.json").read_text())
    assert [t["candidate"] for t in doc["trials"]] == ["plan", "arch"]
    assert {t["state"] for t in doc["trials"]} <= {"complete", "pruned"}
    assert all(len(t["val_miou"]) == 1 for t in doc["trials"])
    best = max(doc["trials"], key=lambda t: (t["best_val_miou"], t["candidate"] == "plan"))
    assert doc["winner"] == best["candidate"]
    for name in ("plan", "arch"):
        assert (out / "search" / name / "best.ckpt").is_file()
    recipe = load_config(out / "recipe.yaml")
    assert recipe.model == load_config(out / "search" / f"{doc['winner']}.yaml").model
    assert recipe.model_dump(mode="json") == doc["final"]["recipe"]
    trained = load_config(out / "train" / "config.yaml")
    assert trained.model == recipe.model and trained.optim == recipe.optim
    assert sum(x.startswith("search: candidate") for x in text.splitlines()) == 2
    report = (out / "report.md").read_text()
    assert (
        "## Search" in report
        and "| 2 | `arch` |" in report
        and f"chosen {doc['winner']!r}" in report
    )
    main(args)
    again = capsys.readouterr().out
    assert "search: done already" in again and "search: candidate" not in again
