"""``pixelwise auto``: the whole chain on a tiny dataset, resuming, and its argument checks."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import study_dataset

from pixelwise.auto.run import DeadlineStop, bundle_name_for, parse_duration, run_auto
from pixelwise.cli import main
from pixelwise.errors import PixelwiseError

# a 60 s budget on 8 images of 16x16: one epoch, no timing steps (the plan's prior step time)
FAST = ["--time", "60s", "--max-epochs", "1", "--no-measure", "--quiet", "--device", "cpu"]
FILES = [
    "fingerprint.json",
    "recipe.yaml",
    "plan.json",
    "train/best.ckpt",
    "train/last.ckpt",
    "train.json",
    "evaluation.json",
    "evaluation_confusion.png",
    "toy.json",
    "toy.safetensors",
    "curves.png",
    "report.md",
]
STEPS = ["fingerprint", "plan", "train", "evaluate", "bundle", "report"]


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One ``pixelwise auto`` run from the CLI: (dataset YAML, output folder, its stdout)."""
    root = tmp_path_factory.mktemp("auto")
    data = study_dataset(root / "ds")
    out = root / "run"
    capture = pytest.MonkeyPatch()
    import io
    import sys

    buf = io.StringIO()
    capture.setattr(sys, "stdout", buf)
    try:
        main(["auto", str(data), "--out", str(out), *FAST])
    finally:
        capture.undo()
    return data, out, buf.getvalue()


def _lines(text: str, step: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith(f"{step}:")]


def test_auto_writes_every_file(auto_run: tuple[Path, Path, str]) -> None:
    _, out, text = auto_run
    for name in FILES:
        assert (out / name).is_file(), name
    assert len(list((out / "samples").glob("*.png"))) == 2  # the test split holds 2 images
    for step in STEPS:
        assert _lines(text, step), f"no line for {step}: {text}"
    assert f"--model {out / 'toy.json'}" in text
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["split"] == "test" and len(ev["per_class"]) == 4
    report = (out / "report.md").read_text()
    for part in ("## Dataset fingerprint", "## Plan", "curves.png", "| pole |", "samples/0_"):
        assert part in report
    assert json.loads((out / "train.json").read_text())["epochs"] == 1


def test_recipe_is_an_ordinary_recipe(auto_run: tuple[Path, Path, str]) -> None:
    from pixelwise.config import load_config

    _, out, _ = auto_run
    cfg = load_config(out / "recipe.yaml")
    assert cfg.train.epochs == 1 and cfg.data.val_split == "val"
    assert "epochs capped at 1 (max_epochs)" in " ".join(
        json.loads((out / "plan.json").read_text())["reasons"]
    )


def test_second_run_is_done_already(
    auto_run: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data, out, _ = auto_run
    before = (out / "train" / "last.ckpt").stat().st_mtime_ns
    main(["auto", str(data), "--out", str(out), *FAST])
    text = capsys.readouterr().out
    for step in STEPS:
        assert _lines(text, step) == [_lines(text, step)[0]]
        assert "done already" in _lines(text, step)[0], text
    assert (out / "train" / "last.ckpt").stat().st_mtime_ns == before


def test_predict_with_the_bundle(auto_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    data, out, _ = auto_run
    image = data.parent / "images" / "6.png"
    main(
        ["predict", str(image), "--out", str(tmp_path), "--model", str(out / "toy.json"), "--quiet"]
    )
    assert (tmp_path / "6.png").is_file()


def test_resume_after_training_was_killed(
    auto_run: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed during training (last.ckpt there, train.json not) continues from last.ckpt."""
    data, done, _ = auto_run
    out = tmp_path / "run"
    shutil.copytree(done, out)
    for name in ("train.json", "evaluation.json", "evaluation_confusion.png", "report.md"):
        (out / name).unlink()
    engine_train = importlib.import_module("pixelwise.engine.train")  # the module, not the function

    calls = []
    real = engine_train.train

    def spy(cfg, run_dir, **kw):  # noqa: ANN001, ANN202
        calls.append(kw["resume"])
        return real(cfg, run_dir, **kw)

    monkeypatch.setattr(engine_train, "train", spy)
    lines: list[str] = []
    result = run_auto(
        data, out, budget_seconds=60, device="cpu", measure=False, progress=False, say=lines.append
    )
    assert calls == [True]
    assert result.skipped == ["fingerprint", "plan", "bundle"]
    assert (out / "report.md").is_file() and (out / "train.json").is_file()


def test_rerun_after_a_failure_past_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training fails (as a kill would stop it) after fingerprint and plan: the rerun keeps those."""
    data = study_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    engine_train = importlib.import_module("pixelwise.engine.train")  # the module, not the function

    real = engine_train.train

    def boom(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("killed")

    monkeypatch.setattr(engine_train, "train", boom)
    kw = {"budget_seconds": 60, "device": "cpu", "measure": False, "progress": False}
    with pytest.raises(RuntimeError, match="killed"):
        run_auto(data, out, max_epochs=1, say=lambda _: None, **kw)
    assert {p.name for p in out.iterdir()} == {"fingerprint.json", "recipe.yaml", "plan.json"}
    monkeypatch.setattr(engine_train, "train", real)
    lines: list[str] = []
    result = run_auto(data, out, max_epochs=1, say=lines.append, **kw)
    assert result.skipped == ["fingerprint", "plan"]
    assert any(x.startswith("train: starting") for x in lines)
    assert result.report.is_file() and result.bundle.name == "toy.json"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("45", 45), ("1.5h", 5400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0", "-5m", "10d", "5 minutes"])
def test_bad_time_is_one_line(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(PixelwiseError):
        parse_duration(text)
    with pytest.raises(SystemExit) as exc:
        main(["auto", str(tmp_path), "--time", text, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --time") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_bundle_name_for() -> None:
    assert bundle_name_for("CamVid 11 (v2)") == "CamVid_11_v2"
    assert bundle_name_for("???") == "model"


def test_deadline_stop() -> None:
    state = SimpleNamespace(stop_training=False)
    cb = DeadlineStop(3600)
    cb.on_train_start(state)
    cb.on_epoch_end(state, {})
    assert not state.stop_training
    cb.load_state_dict({"spent": 3600.0})  # a resumed run that spent the budget already
    cb.on_epoch_end(state, {})
    assert state.stop_training and cb.reached and cb.state_dict()["spent"] >= 3600
