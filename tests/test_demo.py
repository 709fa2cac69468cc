"""``pixelwise demo``: sample photos from installed packages, masks, overlays and a contact sheet,
class areas printed, and the optional evaluation (``--data``, or the model's dataset found beside
the current folder or the repository); for a road-scene model the generated road scenes
(:mod:`pixelwise.data.synthetic`), their scores, the domain notes and the clips."""

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
from pixelwise.data.synthetic import ROAD_SCENE_CLASSES, road_clip, road_scene
from pixelwise.engine import Segmenter
from pixelwise.engine.bundle import write_bundle
from pixelwise.engine.checkpoint import ModelMeta
from pixelwise.engine.demo import (
    CAMVID_CLIP_FPS,
    camvid_clip_frames,
    evaluate_demo,
    find_eval_data,
    is_road_model,
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


def tiny(
    seed: int = 2, dataset: str = "synthetic", names: list[str] = NAMES
) -> tuple[torch.nn.Module, ModelMeta]:
    """A tiny U-Net (3 classes by default) with BatchNorm statistics measured on smooth images and
    no class bias, so its predictions hold several classes."""
    torch.manual_seed(seed)
    kwargs = {"base_channels": 4, "depth": 2}
    k = len(names)
    model = pixelwise.create_model("unet", num_classes=k, in_channels=3, **kwargs)
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
    colors = (
        [[0, 0, 0], [255, 0, 0], [0, 255, 0]] if k == 3 else [[20 * i, 90, 200] for i in range(k)]
    )
    meta = ModelMeta(
        arch="unet",
        num_classes=k,
        in_channels=3,
        class_names=list(names),
        colors=colors,
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


# ---- generated road scenes -------------------------------------------------------------------------

SMALL = (60, 80)  # a road scene at a quarter of CamVid's size: the same street, fast
ROAD = ROAD_SCENE_CLASSES.index("road")


def tiny_road() -> Segmenter:
    """A tiny untrained model of CamVid's 11 classes (dataset camvid): a road-scene model."""
    return Segmenter(*tiny(dataset="camvid", names=list(ROAD_SCENE_CLASSES)), device="cpu")


def test_road_scene_is_deterministic_per_seed() -> None:
    a, b, other = road_scene(3, size=SMALL), road_scene(3, size=SMALL), road_scene(4, size=SMALL)
    assert a.image.shape == (*SMALL, 3) and a.image.dtype == np.uint8
    assert a.labels.shape == SMALL and a.labels.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, other.image)
    assert int(a.labels.max()) < len(ROAD_SCENE_CLASSES)


def test_road_scenes_hold_a_street() -> None:
    """At CamVid's size: sky on top, road at the bottom, buildings and pavements, and over three
    streets the smaller things of a road scene too."""
    found = set()
    for seed in (1, 2, 3):
        scene = road_scene(seed)
        assert scene.image.shape == (360, 480, 3)
        labels = scene.labels
        assert np.bincount(labels[0], minlength=11).argmax() in (0, 1, 5)  # sky/building/tree
        assert (labels[-20:] == ROAD).mean() > 0.4
        assert {"sky", "building", "road", "sidewalk"} <= {
            ROAD_SCENE_CLASSES[i] for i in np.unique(labels)
        }
        found |= {ROAD_SCENE_CLASSES[i] for i in np.unique(labels)}
        # the picture follows the labels: the sky is bright, the road darker
        sky, road = scene.image[labels == 0].mean(), scene.image[labels == ROAD].mean()
        assert sky > road + 40
    assert {"car", "pole", "tree", "sign"} <= found


def test_road_clip_frames_agree() -> None:
    frames = list(road_clip(5, frames=4, size=SMALL))
    assert len(frames) == 4
    first = road_scene(5, size=SMALL)
    assert np.array_equal(frames[0].labels, first.labels)  # frame 0 is the still
    for a, b in zip(frames, frames[1:], strict=False):
        same = (a.labels == b.labels).mean()
        assert 0.7 < same < 1.0  # the camera moved 0.8 m: most pixels keep their class
        diff = np.abs(a.image.astype(int) - b.image.astype(int)).mean()
        assert 0 < diff < 30


def test_road_generators_reject_bad_arguments() -> None:
    for kwargs, match in (
        ({"frames": 0}, "frames must be >= 1"),
        ({"fps": 0}, "fps must be > 0"),
        ({"size": (4, 80)}, "each side >= 8"),
    ):
        with pytest.raises(PixelwiseError, match=match) as err:
            next(road_clip(0, **kwargs))
        assert "\n" not in str(err.value)


def test_is_road_model() -> None:
    assert is_road_model(tiny_road().meta)
    assert not is_road_model(tiny(dataset="camvid")[1])  # 3 classes: not CamVid's
    original = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence"]
    original += ["Car", "Pedestrian", "Bicyclist"]
    assert is_road_model(tiny(dataset="", names=original)[1])
    shuffled = list(ROAD_SCENE_CLASSES[::-1])
    assert not is_road_model(tiny(dataset="", names=shuffled)[1])


def test_demo_scores_generated_road_scenes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = segment_demo(tiny_road(), [], out, max_size=SMALL)
    scenes = [i for i in result.images if i.synthetic]
    assert [i.source.name for i in scenes] == [f"road_scene_{n}.png" for n in (1, 2, 3)]
    assert result.images[:3] == scenes  # the model's own domain comes first
    for n in (1, 2, 3):
        image = np.asarray(Image.open(out / "inputs" / f"road_scene_{n}.png"))
        truth = np.asarray(Image.open(out / "inputs" / f"road_scene_{n}_labels.png"))
        assert image.shape == (*SMALL, 3) and truth.shape == SMALL
        assert np.array_equal(truth, road_scene(n, size=SMALL).labels)
        assert (out / f"road_scene_{n}.png").is_file() and (
            out / f"road_scene_{n}_overlay.png"
        ).is_file()
    assert result.scenes is not None and result.scenes.images == 3
    assert 0 <= result.scenes.miou <= 1 and set(result.scenes.iou) == set(ROAD_SCENE_CLASSES)
    # the sample photos are marked as outside the model's domain
    photos = {p.name for p in sample_images()}
    assert {i.source.name for i in result.out_of_domain} == photos
    assert {i.domain for i in scenes} == {"in"}
    summary = json.loads((out / "summary.json").read_text())
    road = summary["road_scenes"]
    assert road["synthetic"] is True and road["licence"].startswith("Apache-2.0")
    assert road["miou"] == pytest.approx(result.scenes.miou, abs=1e-6)
    assert "grace_hopper.jpg" in summary["domain"]["out"]
    assert "out of domain for a road-scene model: grace_hopper.jpg" in summary["domain"]["note"]
    assert summary["domain"]["in"] == ["road_scene_1.png", "road_scene_2.png", "road_scene_3.png"]


def test_other_models_get_no_road_scenes(tmp_path: Path, synth) -> None:  # noqa: ANN001
    image = synth.png("a.png", synth.image(20, 30))
    result = segment_demo(
        Segmenter(*tiny(), device="cpu"), [image], tmp_path / "o", samples=False, clips=True
    )
    assert result.scenes is None and not (tmp_path / "o" / "inputs").exists()
    assert {i.domain for i in result.images} == {None}
    assert "not a road-scene model" in result.clips_note
    assert "domain" not in json.loads((tmp_path / "o" / "summary.json").read_text())
    with pytest.raises(PixelwiseError, match="CamVid's 11 classes"):
        segment_demo(Segmenter(*tiny(), device="cpu"), [image], tmp_path / "p", road_scenes=2)


def test_demo_without_pyav_skips_the_clips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pixelwise.video.io as video_io

    def missing() -> None:
        raise PixelwiseError("videos need PyAV: pip install 'pixelwise[video]' (or pip install av)")

    monkeypatch.setattr(video_io, "require_av", missing)
    result = segment_demo(tiny_road(), [], tmp_path, samples=False, max_size=SMALL, clips=True)
    assert not result.clips and result.clips_note.startswith("no clips: videos need PyAV")
    assert "\n" not in result.clips_note and not list(tmp_path.glob("*.mp4"))
    assert json.loads((tmp_path / "summary.json").read_text())["clips_note"] == result.clips_note


def test_demo_writes_the_road_clip(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from pixelwise.video import open_video

    result = segment_demo(tiny_road(), [], tmp_path, samples=False, max_size=SMALL, clips=True)
    assert result.clips_note == "" and len(result.clips) == 1
    clip = result.clips[0]
    assert clip.overlay == tmp_path / "road_clip_overlay.mp4" and clip.synthetic
    assert clip.source == tmp_path / "inputs" / "road_clip.mp4" and clip.fps == 10
    with open_video(clip.overlay) as video:
        frames = list(video)
    assert len(frames) == clip.frames == 36 and frames[0].shape == (*SMALL, 3)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["clips"][0]["overlay"] == "road_clip_overlay.mp4"
    assert summary["clips"][0]["source"] == "inputs/road_clip.mp4"
    assert not list(tmp_path.glob(".*.tmp"))


def _sequence_layout(base: Path) -> Path:
    """A repo whose camvid test split holds two sequences: A (three frames 30 apart, a gap, one
    more) and B (four consecutive frames)."""
    root = base / "shared" / "data" / "camvid"
    names = ["A_f00000", "A_f00030", "A_f00060", "A_f00300", "B_000010", "B_000040"]
    names += ["B_000070", "B_000100", "C_notaframe"]
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((24, 32, 3), 20 * i, np.uint8)).save(
            root / "images" / f"{name}.png"
        )
        Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "masks" / f"{name}.png")
    repo = base / "repo"
    (repo / "configs" / "data").mkdir(parents=True)
    classes = ", ".join(f"{{name: {n}}}" for n in ROAD_SCENE_CLASSES)
    (repo / "configs" / "data" / "camvid.yaml").write_text(
        f"name: camvid\nroot: ../../../shared/data/camvid\nclasses: [{classes}]\n"
        "splits:\n  test: {images: images, masks: masks}\n"
    )
    return repo


def test_camvid_clip_frames_take_the_longest_sequence(tmp_path: Path) -> None:
    repo = _sequence_layout(tmp_path)
    frames, why = camvid_clip_frames([repo])
    assert why == "" and [p.stem for p in frames] == [
        "B_000010",
        "B_000040",
        "B_000070",
        "B_000100",
    ]
    assert [p.stem for p in camvid_clip_frames([repo], limit=2)[0]] == ["B_000010", "B_000040"]
    frames, why = camvid_clip_frames([tmp_path / "elsewhere" / "repo"])
    assert frames == [] and "no ../shared/data/camvid" in why


def test_demo_writes_a_camvid_clip(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from pixelwise.video import open_video

    frames, _ = camvid_clip_frames([_sequence_layout(tmp_path)])
    out = tmp_path / "out"
    result = segment_demo(
        tiny_road(), [], out, samples=False, max_size=SMALL, clips=True, clip_frames=frames
    )
    clip = result.clips[1]
    assert clip.overlay == out / "camvid_test_clip_overlay.mp4" and not clip.synthetic
    assert clip.source is None and clip.fps == CAMVID_CLIP_FPS
    assert "1 s apart in real time" in clip.note and "B_000010.png to B_000100.png" in clip.note
    with open_video(clip.overlay) as video:
        assert len(list(video)) == 4
    assert not list(out.glob(".*.tmp")) and not (out / "camvid_test_clip.mp4").exists()


CAMVID = ROOT.parent / "shared" / "data" / "camvid"


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"no CamVid data at {CAMVID}")
def test_camvid_clip_frames_on_the_real_test_split() -> None:
    frames, why = camvid_clip_frames([ROOT])
    assert why == "" and len(frames) == 60
    prefixes = {p.stem.rsplit("_", 1)[0] for p in frames}
    assert len(prefixes) == 1 and frames == sorted(frames)
    assert all(p.is_file() for p in frames)


def test_demo_command_says_what_is_in_and_out_of_domain(tmp_path: Path) -> None:
    """The command line of a road-scene bundle: the scenes' score and the domain lines."""
    bundles = tmp_path / "bundles"
    model, meta = tiny(dataset="camvid", names=list(ROAD_SCENE_CLASSES))
    write_bundle((model, meta), bundles, "camvid", input_size=SMALL)
    env = {**os.environ, ENV_VAR: str(bundles), "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    r = subprocess.run(
        [sys.executable, "-m", "pixelwise", "demo", "--no-eval", "--no-clips", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(x.startswith("road_scene_1.png (80×60, synthetic): ") for x in lines), r.stdout
    assert re.search(r"^generated road scenes \(3, synthetic.*mIoU \d+\.\d\d%", r.stdout, re.M)
    out_line = next(x for x in lines if x.startswith("out of domain for a road-scene model: "))
    assert "grace_hopper.jpg" in out_line
    assert any(
        x.startswith("in the model's domain (synthetic street scenes): road_scene_1.png")
        for x in lines
    )
