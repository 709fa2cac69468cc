"""``pixelwise demo``: sample photos from installed packages, masks, overlays and a contact sheet,
class areas printed, and the optional evaluation (``--data``, or the model's dataset found beside
the current folder or the repository)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixelwise
from pixelwise.engine import Segmenter
from pixelwise.engine.bundle import write_bundle
from pixelwise.engine.checkpoint import ModelMeta
from pixelwise.engine.demo import (
    evaluate_demo,
    find_eval_data,
    load_demo_model,
    plan_evaluation,
    sample_images,
    segment_demo,
)
from pixelwise.errors import PixelwiseError
from pixelwise.pretrained import ENV_VAR

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["bg", "red", "green"]
HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed: int = 2, dataset: str = "synthetic") -> tuple[torch.nn.Module, ModelMeta]:
    """A tiny 3-class U-Net with BatchNorm statistics measured on smooth images and no class bias,
    so its predictions hold several classes."""
    torch.manual_seed(seed)
    kwargs = {"base_channels": 4, "depth": 2}
    model = pixelwise.create_model("unet", num_classes=3, in_channels=3, **kwargs)
    rng = np.random.default_rng(100)
    low = torch.from_numpy(rng.random((8, 3, 6, 8), dtype=np.float32))
    x = (torch.nn.functional.interpolate(low, size=(48, 64), mode="bicubic") - 0.5) / 0.25
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
        model.head.bias.zero_()
    meta = ModelMeta(
        arch="unet",
        num_classes=3,
        in_channels=3,
        class_names=NAMES,
        colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        mean=[0.5] * 3,
        std=[0.25] * 3,
        model_kwargs=kwargs,
        dataset=dataset,
    )
    return model.eval(), meta


def _dataset(synth, folder: str = "data") -> Path:  # noqa: ANN001 - the conftest Synth
    """A paired images/ + masks/ folder with all three classes in each 24×32 mask."""
    masks = {}
    for i in range(3):
        m = np.random.default_rng(i).integers(0, 3, (24, 32), np.uint8)
        m[0, :3] = [0, 1, 2]
        masks[f"s{i}"] = m
    return synth.paired(masks, folder=folder)


# ---- sample photos ---------------------------------------------------------------------------------


def test_sample_photos_come_from_installed_packages() -> None:
    import matplotlib

    photos = sample_images()
    assert photos and all(p.is_file() for p in photos)
    assert photos[0] == Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    names = [p.name for p in photos]
    if HAS_SKIMAGE:
        assert "astronaut.png" in names and "cell.png" not in names
        assert "cell.png" in [p.name for p in sample_images(channels=1)]


# ---- end to end through the command line -----------------------------------------------------------


def test_demo_end_to_end(tmp_path: Path, synth) -> None:  # noqa: ANN001
    """On a bundle named camvid (the default --model): the samples plus one image given, the
    contact sheet, the class areas printed, and the score on --data."""
    bundles = tmp_path / "bundles"
    write_bundle(tiny(), bundles, "camvid", input_size=(48, 64))
    data = _dataset(synth)
    photo = synth.png("more/photo.png", synth.image(40, 50))
    env = {**os.environ, ENV_VAR: str(bundles), "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    args = [sys.executable, "-m", "pixelwise", "demo", str(photo), "--data", str(data)]
    r = subprocess.run(
        [*args, "--workers", "0", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / "pixelwise-demo"
    samples = [p.stem for p in sample_images()]
    for stem in [*samples, "photo"]:
        assert (out / f"{stem}.png").is_file(), stem
        assert (out / f"{stem}_overlay.png").is_file(), stem
    for name in ("contact_sheet.png", "summary.json", "evaluation.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.height > 200 * (len(samples) + 1)
    mask = np.asarray(Image.open(out / "photo.png"))
    assert mask.shape == (40, 50) and mask.max() < 3  # small images keep their size
    with Image.open(out / "grace_hopper.png") as big:  # 600×512 scaled down to 48×64's pixels
        assert big.width * big.height <= 48 * 64 * 1.05
    # one line of class areas per image, largest first, adding up to 100 %
    line = next(x for x in r.stdout.splitlines() if x.startswith("photo.png"))
    pcts = [float(v) for v in re.findall(r"(\d+\.\d)%", line)]
    assert pcts == sorted(pcts, reverse=True) and abs(sum(pcts) - 100) < 0.5
    assert all(n in NAMES for n in re.findall(r"(\w+) \d+\.\d%", line))
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["images"]) == len(samples) + 1 and not summary["failed"]
    # the evaluation on --data: the folder's "all" split
    assert re.search(r"data / all \(3 images\): mIoU \d+\.\d\d%", r.stdout), r.stdout
    report = json.loads((out / "evaluation.json").read_text())
    assert report["num_images"] == 3 and 0 <= report["miou"] <= 1


# ---- in process ------------------------------------------------------------------------------------


def test_rerunning_overwrites(tmp_path: Path, synth) -> None:  # noqa: ANN001
    image = synth.png("a.png", np.asarray(Image.new("RGB", (40, 30), (200, 30, 30))))
    out = tmp_path / "out"
    first = segment_demo(Segmenter(*tiny(2), device="cpu"), [image], out, samples=False)
    before = (out / "a.png").read_bytes()
    model, meta = tiny(2)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 100.0]))  # everything "green"
    second = segment_demo(Segmenter(model, meta, device="cpu"), [image], out, samples=False)
    assert (out / "a.png").read_bytes() != before
    assert second.images[0].areas == [("green", 1.0)]
    assert first.sheet == second.sheet and second.sheet.is_file()


def test_unreadable_image_is_reported_and_the_rest_written(tmp_path: Path, synth) -> None:  # noqa: ANN001
    good = synth.png("good.png", synth.image(20, 30))
    bad = synth.text("bad.png", "not an image")
    result = segment_demo(
        Segmenter(*tiny(), device="cpu"),
        [good, bad, tmp_path / "missing.png"],
        tmp_path / "out",
        samples=False,
    )
    assert [i.name for i in result.images] == ["good"]
    assert {Path(p).name for p, _ in result.failed} == {"bad.png", "missing.png"}


def test_nothing_to_segment_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(PixelwiseError, match="nothing to segment") as err:
        segment_demo(Segmenter(*tiny(), device="cpu"), [], tmp_path / "out", samples=False)
    assert "\n" not in str(err.value)


def test_same_stems_get_distinct_outputs(tmp_path: Path, synth) -> None:  # noqa: ANN001
    a = synth.png("x/img.png", synth.image(20, 30))
    b = synth.png("y/img.png", synth.image(20, 30))
    result = segment_demo(Segmenter(*tiny(), device="cpu"), [a, b], tmp_path / "o", samples=False)
    assert [i.name for i in result.images] == ["x_img.png", "y_img.png"]  # as predict names them


def test_load_demo_model_reads_the_bundle_description(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_bundle(tiny(), tmp_path, "camvid", input_size=(48, 64), extra={"test_miou": 0.5})
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    seg, info = load_demo_model(device="cpu")
    assert seg.class_names == NAMES
    assert info is not None and info["input_size"] == [48, 64] and info["extra"]["test_miou"] == 0.5


# ---- where the evaluation data comes from ----------------------------------------------------------


def _layout(base: Path, dataset: str, *, yaml: bool = True, data: bool = True) -> Path:
    """``base/repo/configs/data/<dataset>.yaml`` describing ``base/shared/data/<dataset>``."""
    repo = base / "repo"
    (repo / "configs" / "data").mkdir(parents=True)
    if data:
        root = base / "shared" / "data" / dataset
        for i in range(2):
            m = np.zeros((16, 16), np.uint8)
            m[:, 5:] = 1
            m[10:] = 2
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), 90 * i, np.uint8)).save(
                root / "images" / f"{i}.png"
            )
            Image.fromarray(m).save(root / "masks" / f"{i}.png")
    if yaml:
        (repo / "configs" / "data" / f"{dataset}.yaml").write_text(
            f"name: {dataset}\nroot: ../../../shared/data/{dataset}\n"
            "classes: [{name: bg}, {name: red}, {name: green}]\n"
            "splits:\n  train: {images: images, masks: masks}\n"
            "  test: {images: images, masks: masks}\n"
        )
    return repo


def test_find_eval_data(tmp_path: Path) -> None:
    repo = _layout(tmp_path / "a", "camvid")
    assert find_eval_data("camvid", [tmp_path / "elsewhere", repo]) == (
        repo / "configs" / "data" / "camvid.yaml",
        "",
    )
    yaml, why = find_eval_data("camvid", [_layout(tmp_path / "b", "camvid", yaml=False)])
    assert yaml is None and "no configs/data/camvid.yaml" in why
    yaml, why = find_eval_data("camvid", [_layout(tmp_path / "c", "camvid", data=False)])
    assert yaml is None and "no ../shared/data/camvid" in why and "--data" in why


def test_plan_evaluation_finds_the_models_dataset(tmp_path: Path) -> None:
    repo = _layout(tmp_path, "camvid")
    seg = Segmenter(*tiny(dataset="camvid"), device="cpu")
    plan = plan_evaluation(seg, roots=[repo])
    assert plan.spec is not None and plan.split == "test" and "camvid.yaml" in plan.note
    result = evaluate_demo(seg, plan, tmp_path / "out", num_workers=0, progress=False)
    assert result is not None and result.num_images == 2
    assert (tmp_path / "out" / "evaluation.json").is_file()
    # skipped, each with its reason in one line
    assert "--no-eval" in plan_evaluation(seg, roots=[repo], enabled=False).note
    other = Segmenter(*tiny(dataset="cityscapes"), device="cpu")
    note = plan_evaluation(other, roots=[repo]).note
    assert note.startswith("no evaluation:") and "shared/data/cityscapes" in note
    assert "names no dataset" in plan_evaluation(Segmenter(*tiny(dataset=""), device="cpu")).note


def test_plan_evaluation_skips_a_dataset_with_other_classes(tmp_path: Path) -> None:
    repo = _layout(tmp_path, "camvid")
    text = (repo / "configs" / "data" / "camvid.yaml").read_text()
    (repo / "configs" / "data" / "camvid.yaml").write_text(
        text.replace("{name: green}", "{name: green}, {name: blue}")
    )
    plan = plan_evaluation(Segmenter(*tiny(dataset="camvid"), device="cpu"), roots=[repo])
    assert plan.spec is None and "4 classes, the model 3" in plan.note


def test_explicit_data_must_fit_the_model(tmp_path: Path, synth) -> None:  # noqa: ANN001
    seg = Segmenter(*tiny(), device="cpu")
    data = _dataset(synth)
    plan = plan_evaluation(seg, data=data)
    assert plan.split == "all" and plan.spec is not None
    with pytest.raises(PixelwiseError, match="no split 'nope'"):
        plan_evaluation(seg, data=data, split="nope")
    two = synth.paired({"t": np.array([[0, 255], [255, 0]], np.uint8)}, folder="binary")
    with pytest.raises(PixelwiseError, match="2 classes, but the model has 3"):
        plan_evaluation(seg, data=two)
