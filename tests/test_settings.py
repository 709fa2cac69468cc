"""Settings that would corrupt a run are refused before it starts (GitHub issue 19, item 6).

A mask's ignore value that is also a class's, a model recipe that is too large to build, numbers
outside their meaningful range, and a ``--resume`` that changes what ``last.ckpt`` fixes.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import toy_dataset

from pixelwise.config import RunConfig, load_config
from pixelwise.data import load_dataset_spec
from pixelwise.data.formats.folders import CAMVID_CLASSES
from pixelwise.engine import train
from pixelwise.errors import PixelwiseError

train_mod = importlib.import_module("pixelwise.engine.train")  # the module, not the function
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def _raw(dataset: Path, **sections: dict) -> dict:
    raw = {
        "data": {"dataset": str(dataset), "train_split": "all", "val_split": "all"},
        "model": {"name": "unet", "params": {"base_channels": 4, "depth": 2}},
        "augment": {"crop_size": [24, 24], "scale": [0.75, 1.25]},
        "optim": {"lr": 0.01},
        "schedule": {"name": "poly", "warmup_iters": 1},
        "train": {"epochs": 1, "batch_size": 4, "num_workers": 0, "amp": "off", "seed": 3},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


def _recipe(tmp_path: Path) -> Path:
    data = toy_dataset(tmp_path / "data")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_raw(data)))
    return path


# ---- 6(a): an ignore value that is a class's value -------------------------------------------------


def _dataset_yaml(tmp_path: Path, classes: list[dict], mask: dict) -> Path:
    path = tmp_path / "ds.yaml"
    text = {"name": "ds", "classes": classes, "mask": mask, "splits": {"train": {"list": "t.txt"}}}
    path.write_text(yaml.safe_dump(text))
    return path


CAMVID = [{"name": n, "color": list(c)} for n, c in CAMVID_CLASSES]


@pytest.mark.parametrize(
    ("classes", "mask", "needle"),
    [
        (CAMVID, {"encoding": "index", "ignore_index": 3}, f"ignore_index 3 is also the mask value "
         f"of class {CAMVID_CLASSES[3][0]!r} (class 3)"),
        (CAMVID, {"encoding": "index", "ignore_index": 0}, f"class {CAMVID_CLASSES[0][0]!r}"),
        (CAMVID, {"encoding": "index", "ignore_index": 255, "ignore_values": [10]},
         f"ignore_values 10 is also the mask value of class {CAMVID_CLASSES[10][0]!r}"),
        ([{"name": "bg", "mask_value": 0}, {"name": "cell", "mask_value": 255}],
         {"encoding": "value_map", "ignore_index": 255}, "class 'cell' (class 1)"),
        (CAMVID, {"encoding": "rgb", "ignore_color": list(CAMVID_CLASSES[2][1])},
         f"is also the colour of class {CAMVID_CLASSES[2][0]!r} (class 2)"),
    ],
    ids=["camvid-3", "camvid-0", "ignore-values", "value-map", "rgb"],
)  # fmt: skip
def test_an_ignore_value_that_is_a_class_is_refused(
    tmp_path: Path, classes: list, mask: dict, needle: str
) -> None:
    """CamVid with ignore_index 3 used to train, and its class 3 scored IoU 0 inside the mean."""
    path = _dataset_yaml(tmp_path, classes, mask)
    with pytest.raises(PixelwiseError) as info:
        load_dataset_spec(path)
    msg = str(info.value)
    assert needle in msg and str(path) in msg and "\n" not in msg, msg


def test_ignore_values_that_no_class_has_are_accepted(tmp_path: Path) -> None:
    spec = load_dataset_spec(_dataset_yaml(tmp_path, CAMVID, {"ignore_index": 11}))
    assert spec.num_classes == 11 and spec.mask.ignore_index == 11


# ---- 6(b): a model recipe too large to build ----------------------------------------------------

_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))  # the old code fails here, safely
import pixelwise.engine.train
from pixelwise.cli import main
from pixelwise.registry import list_models
list_models()  # every module imported before the measurement
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"code": code, "grew_mb": grew / 1024}))
"""


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model.params.depth=12"], "depth=12: must be an integer from 1 to 8"),
        (["model.params.base_channels=64", "model.params.depth=8"], "parameters"),
    ],
    ids=["depth-12", "too-many-parameters"],
)
def test_a_model_too_large_stops_training_before_any_allocation(
    tmp_path: Path, overrides: list[str], needle: str
) -> None:
    """``--set model.params.depth=12`` used to pass the data check and go past 5 GB."""
    args = ["train", str(_recipe(tmp_path)), "--out", str(tmp_path / "run"), "--quiet"]
    for item in overrides:
        args += ["--set", item]
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
    )
    out = json.loads(r.stdout.strip().splitlines()[-1])
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert out["code"] == 2 and needle in line, (out, r.stderr[-2000:])
    assert out["grew_mb"] < 100, out  # before the fix: 3 GiB, then an allocation error
    assert not (tmp_path / "run").exists()


def test_the_model_size_is_checked_before_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_data_check(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the data was checked before the model's size")

    monkeypatch.setattr(train_mod, "check_dataset", no_data_check)
    data = toy_dataset(tmp_path / "data")
    cfg = RunConfig(**_raw(data, model={"params": {"base_channels": 64, "depth": 8}}))
    with pytest.raises(PixelwiseError, match="would have .* parameters"):
        train_mod.setup(cfg, tmp_path / "run", progress=False)


# ---- 6(c): numbers outside their meaningful range --------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-0.01", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.weight_decay=-0.0001", "optim.weight_decay"),
        ("optim.momentum=1.5", "optim.momentum"),
        ("optim.betas=[0.9, 1.0]", "optim.betas"),
        ("train.max_steps=0", "train.max_steps"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.grad_accum=0", "train.grad_accum"),
        ("train.eval_batch_size=0", "train.eval_batch_size"),
        ("train.val_every=0", "train.val_every"),
        ("train.num_workers=-1", "train.num_workers"),
        ("augment.scale=[2.0, 0.5]", "augment.scale"),
        ("augment.scale=[0, 1]", "augment.scale"),
        ("augment.scale=[0.5, 100]", "augment.scale"),
        ("augment.crop_size=[0, 64]", "augment.crop_size"),
        ("augment.crop_size=[64, -8]", "augment.crop_size"),
        ("augment.color_jitter=-0.2", "augment.color_jitter"),
        ("schedule.warmup_iters=-1", "schedule.warmup_iters"),
        ("schedule.warmup_start=2", "schedule.warmup_start"),
        ("schedule.min_lr_ratio=-0.5", "schedule.min_lr_ratio"),
        ("schedule.power=-1", "schedule.power"),
        ("normalize.std=[0.2, 0, 0.2]", "normalize.std"),
        ("normalize.mean=[0.5, .nan, 0.5]", "normalize.mean"),
        ("loss.terms=[{name: ce, weight: -1}]", "loss.terms"),
        ("loss.terms=[{name: ce, weight: 0}]", "every loss term has weight 0"),
        ("loss.class_weights=[1, -1, 1]", "loss.class_weights"),
        ("loss.class_weights=[0, 0, 0]", "class_weights are all 0"),
        ("model.params.num_classes=5", "params must not set num_classes"),
        ("model.name=unetz", "unknown model 'unetz'"),
    ],
)
def test_values_that_corrupt_a_run_are_refused_in_one_line(
    tmp_path: Path, override: str, key: str
) -> None:
    recipe = _recipe(tmp_path)
    with pytest.raises(PixelwiseError) as info:
        load_config(recipe, [override])
    msg = str(info.value)
    assert key in msg and str(recipe) in msg and "\n" not in msg, msg


def test_a_warmup_as_long_as_the_run_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = toy_dataset(tmp_path / "data")
    cfg = RunConfig(**_raw(data, schedule={"warmup_iters": 50}, train={"max_steps": 2}))
    with caplog.at_level(logging.WARNING, logger="pixelwise.engine.train"):
        train_mod.setup(cfg, tmp_path / "run", progress=False)
    assert "warmup_iters 50 is not shorter than the run (2 optimizer steps)" in caplog.text


# ---- 6(d): --resume with settings that last.ckpt fixes ---------------------------------------------


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 1-epoch run of the tiny U-Net on the toy dataset: (its folder, the dataset)."""
    root = tmp_path_factory.mktemp("resume")
    data = toy_dataset(root / "data")
    train(RunConfig(**_raw(data)), root / "run", progress=False)
    return root / "run", data


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"optim": {"lr": 0.1}}, "optim.lr is 0.1 but the run in"),
        ({"optim": {"name": "sgd"}}, "optim.name"),
        ({"schedule": {"name": "cosine"}}, "schedule.name"),
        ({"model": {"params": {"base_channels": 4, "depth": 3}}}, "model.params.depth"),
        ({"model": {"params": {"base_channels": 4, "depth": 2, "dropout": 0.1}}},
         "model.params.dropout is 0.1 but the run in .* was trained with unset"),
        ({"augment": {"scale": [0.5, 1.0]}}, "augment.scale"),
        ({"loss": {"terms": [{"name": "dice"}]}}, "loss.terms"),
        ({"normalize": {"std": [0.2, 0.2, 0.2]}}, "normalize.std"),
        ({"train": {"batch_size": 2}}, "train.batch_size"),
        ({"train": {"seed": 4}}, "train.seed"),
        ({"train": {"amp": "bf16"}}, "train.amp"),
        ({"data": {"train_split": "train"}}, "data.train_split"),
        ({"data": {"val_split": "val"}}, "data.val_split"),
    ],
)  # fmt: skip
def test_resume_refuses_a_setting_that_last_ckpt_fixes(
    one_epoch_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, sections: dict, key: str
) -> None:
    """``--resume --set optim.lr=...`` used to rewrite config.yaml with a rate the restored
    optimizer never used. Refused before the data is read, config.yaml untouched."""
    out, data = one_epoch_run
    before = (out / "config.yaml").read_bytes()
    monkeypatch.setattr(train_mod, "check_dataset", lambda *a, **k: pytest.fail("data read"))
    sections = {**sections, "train": {"epochs": 2, **sections.get("train", {})}}
    cfg = RunConfig(**_raw(data, **sections))
    with pytest.raises(PixelwiseError, match=key) as info:
        train(cfg, out, resume=True, progress=False)
    assert "config.yaml" in str(info.value) and "\n" not in str(info.value)
    assert (out / "config.yaml").read_bytes() == before


def test_resume_accepts_the_settings_it_uses(
    one_epoch_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run, data = one_epoch_run
    out = tmp_path / "run"
    out.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    changed = {"epochs": 2, "val_every": 2, "early_stopping_patience": 5, "eval_batch_size": 2}
    cfg = RunConfig(**_raw(data, train=changed, data={"val_split": None}))
    with pytest.raises(PixelwiseError, match="early_stopping_patience needs a validation split"):
        train(cfg, out, resume=True, progress=False)  # passes the resume check, then setup's
    cfg = RunConfig(**_raw(data, train=changed))
    result = train(cfg, out, resume=True, progress=False)
    assert result.epochs_run == 1 and result.steps == 4
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert {k: written["train"][k] for k in changed} == changed
