"""pixelwise.auto: dataset fingerprints (hand-checkable numbers) and the planning rules."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, toy_dataset
from PIL import Image

from pixelwise.auto import Fingerprint, epochs_for_budget, fingerprint, plan, plan_batch
from pixelwise.config import load_config

MEMBRANE = Path("/work/shared/data/membrane")


def _binary_folder(root: Path) -> Path:
    """4 gray 20x40 images; masks 0/255 with one 2x3 and one 4x5 square of 255 (26 px of 800)."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        mask = np.zeros((20, 40), np.uint8)
        mask[2:4, 2:5] = 255
        mask[10:14, 20:25] = 255
        Image.fromarray(np.full((20, 40), 100, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def _gray_yaml(root: Path, size: int = 64) -> Path:
    """Grayscale, 2 classes by value_map; class 1 (a 4x4 square) only in images 0 and 1 of 4."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        mask = np.zeros((size, size), np.uint8)
        if i < 2:
            mask[:4, :4] = 255
        img = np.where(mask > 0, 200, 50).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    (root / "data.yaml").write_text(
        "name: gray\nroot: .\nimage_channels: 1\n"
        "classes: [{name: bg, mask_value: 0}, {name: dot, mask_value: 255}]\n"
        "mask: {encoding: value_map}\n"
        "splits:\n  train: {images: images, masks: masks}\n"
        "  val: {images: images, masks: masks, stems: ['0']}\n"
    )
    return root / "data.yaml"


def test_fingerprint_toy_rgb(tmp_path: Path) -> None:
    fp = fingerprint(toy_dataset(tmp_path / "toy", n=8, size=32), ["all"])
    assert fp.num_classes == 3 and fp.image_channels == 3 and not fp.gray_as_rgb
    assert fp.height == {"min": 32.0, "median": 32.0, "max": 32.0}
    assert fp.aspect_ratio["median"] == 1.0
    # rows 0..7 are class 2; of rows 8..31, the left half is 0 and the right half 1
    assert fp.class_frequency == pytest.approx([384 / 1024, 384 / 1024, 256 / 1024])
    assert fp.class_presence == [1.0, 1.0, 1.0]
    assert fp.object_median_area == [384.0, 384.0, 256.0]
    assert fp.sampled == 8 and fp.splits["all"] == {"images": 8, "labelled": 8}
    assert fp.mask_values == "0-2"


def test_fingerprint_binary_folder_and_bounds(tmp_path: Path) -> None:
    fp = fingerprint(
        _binary_folder(tmp_path / "bin"), ["all"], max_images=3, max_component_images=2
    )
    assert fp.class_names == ["background", "foreground"]
    assert fp.image_channels == 1
    assert (fp.height["median"], fp.width["median"], fp.aspect_ratio["median"]) == (20, 40, 2.0)
    assert fp.class_frequency[1] == pytest.approx(26 / 800)
    assert fp.object_median_area[1] == pytest.approx(13.0)  # components of 6 and 20 px
    assert fp.object_p5_area[1] == 6.0  # 6, 6, 20, 20 from 2 images
    assert fp.object_pixel_median_area[1] == 20.0  # 40 of the 52 pixels lie in 20-px components
    assert (fp.sampled, fp.sample_of, fp.component_images) == (3, 4, 2)
    assert fp.intensity_mean == pytest.approx([100 / 255]) and fp.intensity_std == [0.0]
    assert "masks hold only 0 and 255" in fp.notes and fp.mask_values == "0, 255"


def test_fingerprint_gray_presence_and_json(tmp_path: Path) -> None:
    fp = fingerprint(_gray_yaml(tmp_path / "g"))
    assert fp.fingerprinted_splits == ["train"] and fp.has_val and not fp.has_test
    assert fp.class_presence == [1.0, 0.5]
    assert fp.class_frequency[1] == pytest.approx(32 / (4 * 64 * 64))
    assert fp.object_p5_area[1] == 16.0
    assert Fingerprint.from_json(fp.to_json()) == fp


def _fp(**changes: object) -> Fingerprint:
    """A hand-made RGB fingerprint: 3 balanced classes, 360x480 images, 100 training images."""
    base = Fingerprint(
        name="x",
        dataset="/tmp/x",
        num_classes=3,
        class_names=["a", "b", "c"],
        image_channels=3,
        gray_as_rgb=False,
        splits={"train": {"images": 100, "labelled": 100}},
        fingerprinted_splits=["train"],
        sampled=64,
        sample_of=100,
        component_images=16,
        height={"min": 360, "median": 360, "max": 360},
        width={"min": 480, "median": 480, "max": 480},
        aspect_ratio={"min": 1.33, "median": 1.33, "max": 1.33},
        intensity_mean=[0.4] * 3,
        intensity_std=[0.2] * 3,
        class_frequency=[0.4, 0.3, 0.3],
        class_presence=[1.0, 1.0, 1.0],
        ignored_fraction=0.0,
        object_median_area=[5000.0] * 3,
        object_p5_area=[800.0] * 3,
        object_pixel_median_area=[5000.0] * 3,
        mask_values="0-2",
    )
    return dataclasses.replace(base, **changes)


def test_plan_rgb_vs_grayscale() -> None:
    rgb = plan(_fp(), budget_seconds=600, device="cpu", step_seconds=1.0).recipe
    assert rgb.model.name == "deeplabv3plus"
    assert rgb.model.params["encoder"] == "tf_efficientnet_lite0"
    assert rgb.augment.crop_size == (384, 480) and not rgb.augment.vflip
    gray = plan(
        _fp(image_channels=1, intensity_mean=[0.3], intensity_std=[0.1]),
        budget_seconds=600,
        device="cpu",
        step_seconds=1.0,
    )
    assert gray.recipe.model.name == "unet" and gray.recipe.augment.rotate90
    assert gray.recipe.normalize.mean == [0.3] and gray.recipe.normalize.std == [0.1]
    assert any("one-channel" in r for r in gray.reasons)


def test_plan_tiny_objects_pick_unet() -> None:
    tiny = _fp(object_pixel_median_area=[5000.0, 3.0, 5000.0])
    p = plan(tiny, budget_seconds=600, device="cpu", step_seconds=1)
    assert p.recipe.model.name == "unet" and any("'b'" in r for r in p.reasons)
    # speckles (a tiny 5th percentile) with most pixels in large objects: not tiny
    speckled = _fp(object_p5_area=[1.0, 1.0, 1.0])
    assert plan(speckled, budget_seconds=600, device="cpu").recipe.model.name == "deeplabv3plus"


def test_plan_imbalanced_adds_dice() -> None:
    balanced = plan(_fp(), budget_seconds=600, device="cpu", step_seconds=1.0).recipe
    rare = plan(
        _fp(class_frequency=[0.9, 0.095, 0.005]), budget_seconds=600, device="cpu", step_seconds=1.0
    ).recipe
    assert [t.name for t in balanced.loss.terms] == ["ce"]
    assert [t.name for t in rare.loss.terms] == ["ce", "dice"]


def test_plan_crop_small_and_large() -> None:
    small = plan(
        _fp(height={"min": 20, "median": 20, "max": 20}),
        budget_seconds=60,
        device="cpu",
        step_seconds=1.0,
    ).recipe
    large = plan(
        _fp(
            height={"min": 2000, "median": 2000, "max": 2000},
            width={"min": 3000, "median": 3000, "max": 3000},
        ),
        budget_seconds=60,
        device="cpu",
        step_seconds=1.0,
    ).recipe
    assert small.augment.crop_size == (32, 480)
    assert large.augment.crop_size == (512, 512)


def test_batch_from_gpu_memory() -> None:
    assert plan_batch((512, 512), "cpu")[0] == 4
    assert plan_batch((512, 512), "cuda", free_memory=80 * 2**30)[0] == 16
    assert plan_batch((512, 512), "cuda", free_memory=2**30)[0] == 2


def test_budget_to_epochs_monotone() -> None:
    epochs = [epochs_for_budget(b, 0.5, 10)[0] for b in (1, 60, 600, 3600, 36000, 10**7)]
    assert epochs == sorted(epochs) and epochs[0] == 1 and epochs[-1] == 500
    plans = [plan(_fp(), budget_seconds=b, device="cpu", step_seconds=0.5) for b in (100, 1000)]
    assert plans[0].recipe.train.epochs < plans[1].recipe.train.epochs


def test_recipe_round_trip_and_training(tmp_path: Path) -> None:
    data = toy_dataset(tmp_path / "toy", n=8, size=32)
    p = plan(fingerprint(data), budget_seconds=30, device="cpu", step_seconds=0.5)
    path = p.write(tmp_path / "auto.yaml")
    assert load_config(path) == p.recipe
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelwise",
            "train",
            str(path),
            "--out",
            str(out),
            "--set",
            "train.max_steps=2",
            "--set",
            "train.num_workers=0",
            "--set",
            "model.params.encoder_weights=null",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "last.ckpt").exists()


@pytest.mark.skipif(not MEMBRANE.is_dir(), reason="no /work/shared/data/membrane")
def test_fingerprint_membrane() -> None:
    fp = fingerprint(ROOT / "configs/data/membrane.yaml", max_images=4, max_component_images=1)
    assert fp.num_classes == 2 and fp.image_channels == 1
    assert fp.median_size == (512, 512)


def test_measure_step_seconds(tmp_path: Path) -> None:
    from pixelwise.auto import measure_step_seconds

    data = toy_dataset(tmp_path / "toy", n=4, size=32)
    recipe = plan(fingerprint(data), budget_seconds=30, device="cpu", step_seconds=0.5).recipe
    recipe.train.num_workers = 0
    seconds = measure_step_seconds(recipe, steps=2)
    assert 0 < seconds < 30
    assert plan(fingerprint(data), budget_seconds=30, device="cpu", step_seconds=seconds).estimates[
        "measured"
    ]


def test_spread_takes_evenly_spaced_items_down_to_one() -> None:
    from pixelwise.data.survey import spread

    assert spread(list(range(10)), 3) == [0, 4, 9]  # first, middle (rounded), last
    assert spread(list(range(10)), 1) == [5] and spread(list(range(10)), 0) == []
    assert spread([1, 2], 5) == [1, 2]
