"""Run recipes: loading the shipped configs, ``--set`` overrides, errors, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelwise.config import RunConfig, apply_overrides, load_config
from pixelwise.errors import PixelwiseError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_load_smoke_recipe() -> None:
    cfg = load_config(CONFIGS / "smoke.yaml")
    assert isinstance(cfg, RunConfig)
    assert Path(cfg.data.dataset) == (CONFIGS / "data" / "camvid.yaml").resolve()
    assert (cfg.data.train_split, cfg.data.val_split) == ("train", "val")
    assert cfg.model.name == "unet" and cfg.model.params == {"base_channels": 8, "depth": 3}
    assert cfg.augment.crop_size == (64, 64) and cfg.augment.scale == (0.5, 1.0)
    assert cfg.train.amp == "off" and cfg.train.max_steps == 6 and cfg.train.num_workers == 0
    assert cfg.optim.lr == 0.005 and cfg.optim.name == "adamw"  # default kept
    assert [t.name for t in cfg.loss.terms] == ["ce"]


def test_load_camvid_unet_recipe() -> None:
    cfg = load_config(CONFIGS / "camvid_unet.yaml")
    assert Path(cfg.data.dataset) == (CONFIGS / "data" / "camvid.yaml").resolve()
    assert cfg.model.params == {"base_channels": 32}
    assert cfg.augment.crop_size == (256, 256) and cfg.augment.scale == (0.75, 1.5)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (0.002, 0.0001)
    assert cfg.schedule.name == "poly" and cfg.schedule.warmup_iters == 100
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.val_every) == (40, 8, 5)
    assert [(t.name, t.weight) for t in cfg.loss.terms] == [("ce", 1.0)]


def test_overrides_nested_and_yaml_typed() -> None:
    raw = {"train": {"epochs": 50}, "model": {"name": "unet"}}
    out = apply_overrides(
        raw,
        [
            "train.epochs=10",
            "train.lr_scale=0.5",
            "model.params.base_channels=16",  # creates the nested sections
            "augment.crop_size=[128, 96]",
            "augment.hflip=false",
            "data.val_split=null",
            "data.train_split=trainval",
            "loss.terms=[{name: ce, weight: 2}]",
            "train.note=a=b",  # only the first '=' splits
            "train.empty=",
        ],
    )
    assert out is raw
    assert raw["train"] == {"epochs": 10, "lr_scale": 0.5, "note": "a=b", "empty": None}
    assert raw["model"] == {"name": "unet", "params": {"base_channels": 16}}
    assert raw["augment"] == {"crop_size": [128, 96], "hflip": False}
    assert raw["data"] == {"val_split": None, "train_split": "trainval"}
    assert raw["loss"] == {"terms": [{"name": "ce", "weight": 2}]}
    assert isinstance(raw["train"]["epochs"], int)


def test_overrides_through_load_config() -> None:
    cfg = load_config(
        CONFIGS / "smoke.yaml",
        [
            "train.epochs=3",
            "model.params.depth=2",
            "augment.crop_size=[32, 48]",
            "optim.lr=0.1",
            "train.amp=bf16",
            "data.val_split=null",
        ],
    )
    assert cfg.train.epochs == 3
    assert cfg.model.params == {"base_channels": 8, "depth": 2}
    assert cfg.augment.crop_size == (32, 48)
    assert cfg.optim.lr == 0.1 and cfg.train.amp == "bf16" and cfg.data.val_split is None


def test_override_amp_off() -> None:
    cfg = load_config(CONFIGS / "camvid_unet.yaml", ["train.amp=off"])
    assert cfg.train.amp == "off"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.epochz=3", "train.epochz"),
        ("trian.epochs=3", "trian"),
        ("model.nmae=x", "model.nmae"),
        ("train.epochs=many", "train.epochs"),
        ("train.amp=fp8", "train.amp"),
    ],
)
def test_bad_override_names_the_key(override: str, needle: str) -> None:
    with pytest.raises(PixelwiseError) as exc:
        load_config(CONFIGS / "smoke.yaml", [override])
    assert needle in str(exc.value) and "smoke.yaml" in str(exc.value)


def test_malformed_overrides() -> None:
    with pytest.raises(PixelwiseError, match="key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(PixelwiseError, match="'epochs' is not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_unknown_key_in_recipe_names_it(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("data: {dataset: d.yaml}\ntrain: {epochs: 2, batchsize: 4}\n")
    with pytest.raises(PixelwiseError, match=r"train\.batchsize") as exc:
        load_config(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_missing_or_invalid_recipe(tmp_path: Path) -> None:
    with pytest.raises(PixelwiseError, match="not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {dataset: [\n")
    with pytest.raises(PixelwiseError, match="invalid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n")
    with pytest.raises(PixelwiseError, match="mapping"):
        load_config(lst)
    nodata = tmp_path / "nodata.yaml"
    nodata.write_text("train: {epochs: 1}\n")
    with pytest.raises(PixelwiseError, match="data"):
        load_config(nodata)


def test_relative_dataset_path_is_relative_to_the_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tmp_path / "recipes" / "sub" / "r.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text("data: {dataset: ../../data/ds.yaml}\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(recipe)
    assert Path(cfg.data.dataset) == (tmp_path / "data" / "ds.yaml").resolve()
    # a path given with --set is relative to the working directory
    cfg = load_config(recipe, ["data.dataset=mine/ds.yaml"])
    assert Path(cfg.data.dataset) == (elsewhere / "mine" / "ds.yaml").resolve()
    # absolute paths are kept
    absolute = tmp_path / "abs.yaml"
    recipe.write_text(f"data: {{dataset: {absolute}}}\n")
    assert Path(load_config(recipe).data.dataset) == absolute
