"""``pixelwise demo``: segment a few photos with a bundled model on a machine that has only the install.

The photos are sample images that installed packages already ship — matplotlib's
``mpl-data/sample_data/grace_hopper.jpg`` (a core dependency) and, when scikit-image is installed,
a few of ``skimage.data``'s (``astronaut.png``, ``rocket.jpg``, ``motorcycle_left.png``; ``cell.png``
for grayscale models) — plus any images given. Each goes through the one prediction path
(:class:`~pixelwise.engine.predictor.Segmenter`); the demo writes ``<name>.png`` (class indices,
class colours as palette), ``<name>_overlay.png``, one ``contact_sheet.png`` (image | overlay per
row, with file names and class areas) and ``summary.json``, all atomically.

Images larger than the model's training size (a bundle's ``input_size``) are first scaled down,
aspect kept, to that many pixels, so objects appear at the scale the model learned.

For a road-scene model (its dataset is ``camvid``, or its 11 classes are CamVid's) the demo first
generates a few street scenes with their exact labels (:mod:`pixelwise.data.synthetic`; made by
pixelwise's own code, Apache-2.0), writes them to ``inputs/road_scene_<n>.png`` (ground truth
beside them as ``road_scene_<n>_labels.png``), segments them like the photos and scores them: the
model's own domain, though synthetic. The sample photos are then marked as outside the model's
domain. With ``clips`` (and PyAV installed) it also writes a generated drive,
``inputs/road_clip.mp4``, segmented through the video path to ``road_clip_overlay.mp4``, and, where
CamVid's test frames are found (:func:`camvid_clip_frames`), ``camvid_test_clip_overlay.mp4``:
consecutive test frames of one sequence (1 s apart in real time, played at
:data:`CAMVID_CLIP_FPS` frames per second).

Evaluation: on ``--data`` when given; otherwise on the model's dataset (``camvid``) when
``../shared/data/<dataset>`` and ``configs/data/<dataset>.yaml`` sit beside the current folder or
the repository the package runs from — else skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .._atomic import atomic_path, write_text_atomic
from ..data.io import read_image, write_png
from ..data.spec import DatasetSpec, load_dataset_spec, resolve_split
from ..data.synthetic import ROAD_SCENE_CLASSES, ROAD_SCENE_LICENSE, road_clip, road_scene
from ..errors import PixelwiseError, first_line, printable
from ..metrics import ConfusionMatrix
from ..pretrained import DEFAULT_MODEL
from .checkpoint import ModelMeta
from .evaluate import EvalResult, evaluate, write_report
from .loading import load_model
from .predict import expand_inputs, output_names
from .predictor import Segmenter
from .visualize import mask_image, overlay_with_legend

__all__ = [
    "CAMVID_CLIP_FPS",
    "DemoClip",
    "DemoImage",
    "DemoResult",
    "EvalPlan",
    "SceneScores",
    "camvid_clip_frames",
    "contact_sheet",
    "domain_note",
    "evaluate_demo",
    "find_eval_data",
    "format_area",
    "is_road_model",
    "load_demo_model",
    "plan_evaluation",
    "sample_images",
    "segment_demo",
]

# Sample photos shipped inside installed packages: (package, path inside it).
_MPL_SAMPLES = ("sample_data/grace_hopper.jpg",)
_SKIMAGE_SAMPLES = ("data/astronaut.png", "data/rocket.jpg", "data/motorcycle_left.png")
_SKIMAGE_GRAY_SAMPLES = ("data/cell.png",)

_REPO = Path(__file__).resolve().parents[2]  # the checkout the package runs from, if any

# the files of the demo itself, which no image's outputs may replace
_DEMO_FILES = ("contact_sheet.png", "summary.json", "evaluation.json", "evaluation_confusion.png")
_IMAGE_FILES = (".png", "_overlay.png")  # what the demo writes per image: mask, overlay

_THUMB_HEIGHT = 200
_THUMB_MAX_WIDTH = 320

# generated road scenes and clips for a road-scene model
_ROAD_SCENES = 3  # stills, seeds 1..3
_CLIP_SEED, _CLIP_FRAMES, _CLIP_FPS = 4, 36, 10  # a 3.6 s drive at 10 fps
_INPUTS = "inputs"  # the folder (inside the output folder) of what the demo generates to segment
# CamVid's labelled frames are every 30th frame of 30 fps video: 1 s apart in real time
CAMVID_CLIP_FPS = 5
_CAMVID_CLIP_MAX = 60
# CamVid's class names as the original release spells them, for a model that names no dataset
_CAMVID_ORIGINAL = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "signsymbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)


@dataclass
class DemoImage:
    """One segmented image: where it came from, what was written, its class areas (class name and
    fraction of pixels, largest first, absent classes left out) at ``size`` (H, W) predicted."""

    source: Path
    name: str
    size: tuple[int, int]
    areas: list[tuple[str, float]]
    mask: Path
    overlay: Path
    domain: str | None = None  # "in" or "out" of a road-scene model's domain; None: not known
    synthetic: bool = False  # a generated road scene


@dataclass(frozen=True)
class SceneScores:
    """The scores on the generated road scenes (their labels are exact): mIoU, pixel accuracy and
    per-class IoU (``None`` for a class absent from both labels and prediction)."""

    images: int
    miou: float
    pixel_accuracy: float
    iou: dict[str, float | None]


@dataclass(frozen=True)
class DemoClip:
    """A clip segmented through the video path: the ``overlay`` video written, its ``frames`` and
    ``fps``, the ``source`` video (``None`` when it was only a temporary file) and a one-line
    ``note`` of what it shows."""

    overlay: Path
    frames: int
    fps: float
    source: Path | None
    note: str
    synthetic: bool


@dataclass
class DemoResult:
    """What :func:`segment_demo` did: images segmented, inputs that failed (input, reason), the
    contact sheet and the summary written; for a road-scene model also the scores on the generated
    scenes, the clips written and ``clips_note`` (why a clip was not written)."""

    images: list[DemoImage] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    sheet: Path | None = None
    summary: Path | None = None
    scenes: SceneScores | None = None
    clips: list[DemoClip] = field(default_factory=list)
    clips_note: str = ""

    @property
    def in_domain(self) -> list[DemoImage]:
        return [i for i in self.images if i.domain == "in"]

    @property
    def out_of_domain(self) -> list[DemoImage]:
        return [i for i in self.images if i.domain == "out"]


@dataclass(frozen=True)
class EvalPlan:
    """The labelled split the demo scores (``spec`` and ``split``), or none; ``note`` says which
    (or why there is none) in one line."""

    spec: DatasetSpec | None
    split: str | None
    note: str


def _package_dir(name: str) -> Path | None:
    """An installed package's folder, without importing it."""
    if name == "matplotlib":
        try:
            import matplotlib

            return Path(matplotlib.get_data_path())
        except ImportError:  # pragma: no cover - a core dependency
            return None
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_images(channels: int = 3) -> list[Path]:
    """Sample photos that installed packages ship (matplotlib's always, scikit-image's when it is
    installed); for a one-channel model also a grayscale microscopy image. Missing ones are left
    out."""
    found = []
    wanted = [("matplotlib", _MPL_SAMPLES), ("skimage", _SKIMAGE_SAMPLES)]
    if channels == 1:
        wanted.append(("skimage", _SKIMAGE_GRAY_SAMPLES))
    for package, rels in wanted:
        base = _package_dir(package)
        if base is None:
            continue
        found.extend(base / rel for rel in rels if (base / rel).is_file())
    return found


def load_demo_model(
    model: str | os.PathLike[str] = DEFAULT_MODEL, *, device: str = "auto"
) -> tuple[Segmenter, dict[str, Any] | None]:
    """The segmenter for ``model`` (a file or a bundled name) and, for a bundle, its description
    (:func:`pixelwise.engine.bundle.bundle_info`), else ``None``."""
    seg = Segmenter(load_model(model, device=device), device=device)
    return seg, seg.loaded.info


def _fit(image: np.ndarray, max_size: tuple[int, int] | None) -> np.ndarray:
    """Scale ``image`` down (never up), aspect kept, to at most max_size's H × W pixels."""
    h, w = image.shape[:2]
    if max_size is None or h * w <= max_size[0] * max_size[1]:
        return image
    scale = math.sqrt(max_size[0] * max_size[1] / (h * w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    out = np.asarray(im.resize(size, Image.Resampling.LANCZOS))
    return np.ascontiguousarray(out[..., None] if out.ndim == 2 else out)


def _areas(labels: np.ndarray, names: Sequence[str]) -> list[tuple[str, float]]:
    counts = np.bincount(labels.reshape(-1), minlength=len(names))[: len(names)]
    total = max(1, int(counts.sum()))
    order = sorted(range(len(names)), key=lambda i: (-counts[i], i))
    return [(names[i], counts[i] / total) for i in order if counts[i] > 0]


def format_area(fraction: float) -> str:
    """A class area as printed: ``43.7%``, or ``<0.1%`` for a sliver."""
    return f"{100 * fraction:.1f}%" if fraction >= 5e-4 else "<0.1%"


def _thumb(im: Image.Image) -> Image.Image:
    scale = min(_THUMB_HEIGHT / im.height, _THUMB_MAX_WIDTH / im.width)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def contact_sheet(
    rows: Sequence[tuple[str, Image.Image, Image.Image, list[tuple[str, float]]]],
    colors: dict[str, Sequence[int]],
) -> Image.Image:
    """One picture of every image: a caption (file name, size), then image | overlay | the largest
    class areas with their colours.

    Args:
        rows: (caption, image, overlay, areas) per image.
        colors: class name → RGB colour.
    """
    font = ImageFont.load_default(size=14)
    line, pad, legend_w, legend_rows = 18, 8, 190, 8
    tiles = [(cap, _thumb(a), _thumb(b), areas) for cap, a, b, areas in rows]
    width = max((a.width + b.width + legend_w + 4 * pad for _, a, b, _ in tiles), default=400)
    row_h = line + max(_THUMB_HEIGHT, legend_rows * line) + 2 * pad
    sheet = Image.new("RGB", (width, max(1, len(tiles)) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (cap, a, b, areas) in enumerate(tiles):
        y = r * row_h + pad
        draw.text((pad, y), cap, fill=(0, 0, 0), font=font)
        y += line
        sheet.paste(a, (pad, y))
        sheet.paste(b, (2 * pad + a.width, y))
        x = 3 * pad + a.width + b.width
        for k, (name, frac) in enumerate(areas[:legend_rows]):
            yy = y + k * line
            draw.rectangle(
                [x, yy + 2, x + 12, yy + 14],
                fill=tuple(colors.get(name, (128, 128, 128))),
                outline=(0, 0, 0),
            )
            draw.text((x + 18, yy), f"{name} {format_area(frac)}", fill=(0, 0, 0), font=font)
    return sheet


def is_road_model(meta: ModelMeta) -> bool:
    """Whether a model segments CamVid's 11 road-scene classes in CamVid's order (its dataset is
    ``camvid``, or its class names are CamVid's): the generated road scenes are its domain."""
    if meta.num_classes != len(ROAD_SCENE_CLASSES) or meta.in_channels != 3:
        return False
    names = tuple(n.lower() for n in meta.class_names)
    return meta.dataset.lower() == "camvid" or names in (ROAD_SCENE_CLASSES, _CAMVID_ORIGINAL)


def _write_scenes(
    count: int, out: Path, size: tuple[int, int], colors: Sequence[Sequence[int]]
) -> list[tuple[Path, np.ndarray]]:
    """Generate ``count`` road scenes into ``out/inputs``: ``road_scene_<n>.png`` and its labels
    ``road_scene_<n>_labels.png``; return (image path, labels) per scene."""
    scenes = []
    for i in range(1, count + 1):
        scene = road_scene(i, size=size)
        path = out / _INPUTS / f"road_scene_{i}.png"
        write_png(path, scene.image)
        write_png(path.with_name(f"road_scene_{i}_labels.png"), mask_image(scene.labels, colors))
        scenes.append((path, scene.labels))
    return scenes


def _scene_scores(confusion: ConfusionMatrix, images: int, names: Sequence[str]) -> SceneScores:
    sc = confusion.scores()
    iou = {n: None if math.isnan(v) else float(v) for n, v in zip(names, sc.iou, strict=True)}
    return SceneScores(images=images, miou=sc.miou, pixel_accuracy=sc.pixel_accuracy, iou=iou)


def _sheet_row(
    item: DemoImage, image: np.ndarray, overlay: Image.Image
) -> tuple[str, Image.Image, Image.Image, list[tuple[str, float]]]:
    """One contact-sheet row: caption (name, size, domain), image, overlay (legend cut off), areas."""
    h, w = item.size
    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    tag = {"in": "  synthetic road scene", "out": "  out of the model's domain"}
    caption = f"{item.source.name}  ({w} x {h}){tag.get(item.domain or '', '')}"
    return printable(caption), Image.fromarray(rgb), overlay.crop((0, 0, w, h)), item.areas


def segment_demo(
    segmenter: Segmenter,
    images: Sequence[str | os.PathLike[str]] = (),
    out_dir: str | os.PathLike[str] = "pixelwise-demo",
    *,
    samples: bool = True,
    max_size: tuple[int, int] | None = None,
    road_scenes: int | None = None,
    clips: bool = False,
    clip_frames: Sequence[Path] = (),
    progress: bool = False,
) -> DemoResult:
    """Segment the sample photos (:func:`sample_images`) and ``images``; write masks, overlays,
    ``contact_sheet.png`` and ``summary.json`` into ``out_dir`` (files of the same name are
    replaced). Each image's files are named as ``pixelwise predict`` names them
    (:func:`~pixelwise.engine.predict.output_names`): its stem, or more of its path where that
    would make two outputs, an output and an input, or an output and the demo's own files one.

    For a road-scene model (:func:`is_road_model`) generated road scenes come first, are scored
    against their exact labels, and the sample photos are marked out of its domain; ``clips`` adds
    the generated drive and the CamVid ``clip_frames`` as segmented videos (see the module).

    Args:
        segmenter: the model and how to run it.
        images: more inputs: files, folders (searched recursively) and glob patterns.
        out_dir: output folder (created).
        samples: include the sample photos.
        max_size: (H, W): larger images are scaled down to that many pixels first (a bundle's
            ``input_size``); ``None``: predicted at their own size. Generated scenes and the clip
            are made at this size (default: CamVid's 360×480).
        road_scenes: how many road scenes to generate; ``None``: 3 for a road-scene model, else 0.
        clips: write the clips (a road-scene model only; needs PyAV, else ``clips_note`` says so).
        clip_frames: consecutive frames for ``camvid_test_clip_overlay.mp4``
            (:func:`camvid_clip_frames`); none: no such clip.
        progress: progress bars for the clips.

    Raises:
        PixelwiseError: nothing to segment (no sample photos installed, no images given and no
            road scenes).
    """
    meta = segmenter.meta
    road = is_road_model(meta)
    count = (_ROAD_SCENES if road else 0) if road_scenes is None else road_scenes
    if count and not road:
        raise PixelwiseError(
            f"road scenes need a model of CamVid's 11 classes; this one has {meta.num_classes}: "
            + ", ".join(meta.class_names[:4])
            + (", ..." if meta.num_classes > 4 else "")
        )
    paths = sample_images(meta.in_channels) if samples else []
    more, failed = expand_inputs([os.fspath(p) for p in images])
    if not paths and not more and not count:
        reason = "; ".join(f"{p}: {r}" for p, r in failed) or "no images given"
        none = "no sample photos are installed and " if samples else ""
        raise PixelwiseError(f"nothing to segment: {none}{reason}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = max_size or (360, 480)
    scenes = dict(_write_scenes(count, out, size, meta.colors))
    sample_set = set(paths)
    paths = list(dict.fromkeys([*scenes, *paths, *more]))
    result = DemoResult(failed=list(failed))
    rows = []
    confusion = ConfusionMatrix(meta.num_classes)
    names = output_names(paths, lambda _: _IMAGE_FILES, out, reserved=_DEMO_FILES)
    for path, name in zip(paths, names, strict=True):
        try:
            image = _fit(read_image(path, meta.in_channels), max_size)
        except PixelwiseError as exc:
            result.failed.append((str(path), str(exc)))
            continue
        labels = segmenter.segment(image).labels
        truth = scenes.get(path)
        if truth is not None:
            confusion.update(torch.from_numpy(labels), torch.from_numpy(truth))
        overlay = overlay_with_legend(image, labels, meta.colors, meta.class_names)
        domain = None
        if road and truth is not None:
            domain = "in"
        elif road and path in sample_set:
            domain = "out"
        item = DemoImage(
            source=path,
            name=name,
            size=(int(image.shape[0]), int(image.shape[1])),
            areas=_areas(labels, meta.class_names),
            mask=out / f"{name}.png",
            overlay=out / f"{name}_overlay.png",
            domain=domain,
            synthetic=truth is not None,
        )
        write_png(item.overlay, overlay)
        write_png(item.mask, mask_image(labels, meta.colors))
        result.images.append(item)
        rows.append(_sheet_row(item, image, overlay))
    if scenes:
        result.scenes = _scene_scores(confusion, len(scenes), meta.class_names)
    if rows:
        result.sheet = out / "contact_sheet.png"
        colors = dict(zip(meta.class_names, meta.colors, strict=False))
        write_png(result.sheet, contact_sheet(rows, colors))
    if clips and road:
        result.clips, result.clips_note = _write_clips(
            segmenter, out, size=size, frames=clip_frames, progress=progress
        )
    elif clips:
        result.clips_note = "no clips: they are road scenes, and this is not a road-scene model"
    result.summary = out / "summary.json"
    write_text_atomic(
        result.summary, json.dumps(_summary(result, meta), indent=2, ensure_ascii=False) + "\n"
    )
    return result


def _summary(result: DemoResult, meta: ModelMeta) -> dict[str, Any]:
    """``summary.json``: every image (with its domain), the scene scores, the clips."""
    summary: dict[str, Any] = {
        "images": [
            {
                "source": printable(i.source),
                "mask": printable(i.mask.name),
                "overlay": printable(i.overlay.name),
                "size": list(i.size),
                "areas": {n: round(f, 6) for n, f in i.areas},
                "domain": i.domain,
                "synthetic": i.synthetic,
            }
            for i in result.images
        ],
        "failed": [{"input": printable(p), "reason": printable(r)} for p, r in result.failed],
        "classes": meta.class_names,
    }
    if is_road_model(meta):
        summary["domain"] = {
            "in": [printable(i.source.name) for i in result.in_domain],
            "out": [printable(i.source.name) for i in result.out_of_domain],
            "note": " ".join(f"{line}." for line in domain_note(result)),
        }
    if result.scenes is not None:
        s = result.scenes
        summary["road_scenes"] = {
            "synthetic": True,
            "generator": "pixelwise.data.synthetic.road_scene (seeds 1.."
            + f"{s.images}), exact labels",
            "licence": ROAD_SCENE_LICENSE,
            "images": s.images,
            "miou": round(s.miou, 6),
            "pixel_accuracy": round(s.pixel_accuracy, 6),
            "iou": {n: None if v is None else round(v, 6) for n, v in s.iou.items()},
            "note": "a score on synthetic pictures, not on CamVid: it measures how far the "
            "model carries over to a clean, simplified street",
        }
    if result.clips or result.clips_note:
        summary["clips"] = [
            {
                "overlay": printable(c.overlay.name),
                "source": None
                if c.source is None
                else printable(c.source.relative_to(c.overlay.parent).as_posix()),
                "frames": c.frames,
                "fps": c.fps,
                "synthetic": c.synthetic,
                "note": c.note,
            }
            for c in result.clips
        ]
        if result.clips_note:
            summary["clips_note"] = result.clips_note
    return summary


def domain_note(result: DemoResult) -> list[str]:
    """Lines saying which images are a road-scene model's own domain and which are not."""
    parts = []
    if result.in_domain:
        names = ", ".join(printable(i.source.name) for i in result.in_domain)
        parts.append(f"in the model's domain (synthetic street scenes): {names}")
    if result.out_of_domain:
        names = ", ".join(printable(i.source.name) for i in result.out_of_domain)
        parts.append(
            f"out of domain for a road-scene model: {names} (its classes there are guesses)"
        )
    return parts


# ---- clips -----------------------------------------------------------------------------------------


def _frame_number(path: Path) -> tuple[str, int] | None:
    """``Seq05VD_f02370.png`` → ``("Seq05VD", 2370)``; ``0001TP_008550.png`` → ``("0001TP",
    8550)``; ``None`` for another name."""
    m = re.fullmatch(r"(.+)_f?(\d+)", path.stem)
    return (m.group(1), int(m.group(2))) if m else None


def _longest_run(paths: Sequence[Path]) -> list[Path]:
    """The longest run of consecutive frames of one sequence: names grouped by their prefix, sorted
    by frame number, a run broken where the step exceeds the sequence's smallest step."""
    seqs: dict[str, list[tuple[int, Path]]] = {}
    for p in paths:
        key = _frame_number(p)
        if key is not None:
            seqs.setdefault(key[0], []).append((key[1], p))
    best: list[Path] = []
    for _, frames in sorted(seqs.items()):
        frames.sort()
        steps = [b - a for (a, _), (b, _) in zip(frames, frames[1:], strict=False) if b > a]
        step = min(steps, default=1)
        run = [frames[0][1]]
        for (a, _), (b, pb) in zip(frames, frames[1:], strict=False):
            if b - a != step:
                best = run if len(run) > len(best) else best
                run = []
            run.append(pb)
        best = run if len(run) > len(best) else best
    return best


def camvid_clip_frames(
    roots: Sequence[str | os.PathLike[str]] | None = None, *, limit: int = _CAMVID_CLIP_MAX
) -> tuple[list[Path], str]:
    """Consecutive CamVid test frames for a clip: the longest sequence of the test split found by
    :func:`find_eval_data` (``Seq05VD_f02370.png``, ``0001TP_008550.png``: sorted by frame within
    a sequence prefix), at most ``limit`` frames. Returns (frames, ""), or ([], why not)."""
    yaml, why = find_eval_data("camvid", roots)
    if yaml is None:
        return [], why
    try:
        spec = load_dataset_spec(yaml)
        name = "test" if "test" in spec.splits else _labelled_split(spec, folder=False)
        if name is None:
            return [], f"{yaml} has no test split"
        samples, _ = resolve_split(spec, name, unlabelled=True)
    except PixelwiseError as exc:
        return [], first_line(exc)
    frames = _longest_run([s.image for s in samples if s.index is None])
    if len(frames) < 2:
        return [], f"{yaml}: no sequence of consecutive test frames"
    return frames[:limit], ""


def _encode(path: Path, frames: Any, fps: int, size: tuple[int, int]) -> int:
    """Write RGB frames (an iterable of H×W×3 uint8) to an MP4 at ``path``, atomically; the count."""
    from ..video.io import VideoWriter

    with atomic_path(path) as tmp:
        writer = VideoWriter(tmp, Fraction(fps), size[1], size[0])
        try:
            for frame in frames:
                writer.write(frame)
            writer.close()
        finally:
            writer.abort()
    return writer.frames_written


def _write_clips(
    segmenter: Segmenter,
    out: Path,
    *,
    size: tuple[int, int],
    frames: Sequence[Path],
    progress: bool,
) -> tuple[list[DemoClip], str]:
    """The generated drive and, with ``frames``, the CamVid clip, each encoded to an MP4 and
    segmented by :func:`~pixelwise.video.segment.write_segmented_video` (the one video path)."""
    from ..video.io import require_av
    from ..video.segment import write_segmented_video

    try:
        require_av()
    except PixelwiseError as exc:
        return [], f"no clips: {exc}"
    clips = []
    source = out / _INPUTS / "road_clip.mp4"
    drive = road_clip(_CLIP_SEED, frames=_CLIP_FRAMES, fps=_CLIP_FPS, size=size)
    _encode(source, (f.image for f in drive), _CLIP_FPS, size)
    done = write_segmented_video(segmenter, source, out, name="road_clip", progress=progress)
    note = (
        f"a generated drive along one street, {_CLIP_FRAMES / _CLIP_FPS:.1f} s at "
        f"{_CLIP_FPS} fps in real time (synthetic; source {_INPUTS}/road_clip.mp4, Apache-2.0)"
    )
    clips.append(DemoClip(done.outputs[0], done.frames, float(done.fps), source, note, True))
    if not frames:
        return clips, ""
    first = read_image(frames[0], 3)
    hw = (int(first.shape[0]), int(first.shape[1]))

    used: list[Path] = []

    def camvid() -> Any:
        for p in frames:
            image = read_image(p, 3)
            if image.shape[:2] == hw:  # a frame of another size is left out
                used.append(p)
                yield image

    fd, tmp = tempfile.mkstemp(prefix=".camvid_test_clip.", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        _encode(Path(tmp), camvid(), CAMVID_CLIP_FPS, hw)
        done = write_segmented_video(
            segmenter, tmp, out, name="camvid_test_clip", progress=progress
        )
    finally:
        Path(tmp).unlink(missing_ok=True)
    seq = _frame_number(frames[0])
    first_name, last_name = used[0].name, used[-1].name
    note = (
        f"{done.frames} consecutive CamVid test frames of {seq[0] if seq else 'one sequence'} "
        f"({first_name} to {last_name}); they are 1 s apart in real time, played at "
        f"{CAMVID_CLIP_FPS} fps ({CAMVID_CLIP_FPS}x real time)"
    )
    clips.append(DemoClip(done.outputs[0], done.frames, float(done.fps), None, note, False))
    return clips, ""


def find_eval_data(
    dataset: str, roots: Sequence[str | os.PathLike[str]] | None = None
) -> tuple[Path | None, str]:
    """The dataset YAML to score ``dataset`` on, looked for beside each root (default: the current
    folder, then the repository the package runs from): ``ROOT/configs/data/<dataset>.yaml`` where
    ``ROOT/../shared/data/<dataset>`` exists. Returns ``(yaml, "")``, or ``(None, why not)``."""
    bases = [Path.cwd(), _REPO] if roots is None else [Path(r) for r in roots]
    orphan = None
    for base in dict.fromkeys(b.resolve() for b in bases):
        data_dir = base.parent / "shared" / "data" / dataset
        yaml = base / "configs" / "data" / f"{dataset}.yaml"
        if data_dir.is_dir() and yaml.is_file():
            return yaml, ""
        if data_dir.is_dir() and orphan is None:
            orphan = data_dir
    if orphan is not None:
        return None, (
            f"found {orphan} but no configs/data/{dataset}.yaml to describe it; "
            "pass --data DATA.yaml"
        )
    return None, (
        f"no ../shared/data/{dataset} beside the current folder or the repository; "
        "pass --data DATA.yaml to score a labelled dataset"
    )


def _labelled_split(spec: DatasetSpec, *, folder: bool) -> str | None:
    """The split the demo scores: ``all`` for a folder of images/ + masks/; otherwise the first
    labelled one of test, val, all."""
    labelled = [n for n, s in spec.splits.items() if s.masks is not None or s.list_file is not None]
    order = ["all"] if folder else ["test", "val", "all"]
    return next((n for n in order if n in labelled), labelled[0] if labelled else None)


def plan_evaluation(
    segmenter: Segmenter,
    *,
    data: str | os.PathLike[str] | None = None,
    split: str | None = None,
    enabled: bool = True,
    roots: Sequence[str | os.PathLike[str]] | None = None,
) -> EvalPlan:
    """What the demo scores. With ``data`` (a dataset YAML or folder) it must fit the model: a
    problem is an error. Without it the model's dataset is looked for (:func:`find_eval_data`) and
    any problem only skips the evaluation, with the reason in ``note``."""
    if not enabled:
        return EvalPlan(None, None, "no evaluation (--no-eval)")
    meta = segmenter.meta
    if data is not None:
        spec = load_dataset_spec(data)
        name = split or _labelled_split(spec, folder=Path(data).is_dir())
        if name is None:
            raise PixelwiseError(f"{data}: no split with masks to score")
        spec.split(name)
        if spec.num_classes != meta.num_classes:
            raise PixelwiseError(
                f"{data}: {spec.num_classes} classes, but the model has {meta.num_classes}"
            )
        return EvalPlan(spec, name, f"{spec.name} / {name} ({spec.source})")
    if not meta.dataset:
        return EvalPlan(None, None, "no evaluation: the model names no dataset; pass --data")
    yaml, why = find_eval_data(meta.dataset, roots)
    if yaml is None:
        return EvalPlan(None, None, f"no evaluation: {why}")
    try:
        spec = load_dataset_spec(yaml)
    except PixelwiseError as exc:
        return EvalPlan(None, None, f"no evaluation: {exc}")
    name = split or _labelled_split(spec, folder=False)
    if name is None or name not in spec.splits:
        return EvalPlan(None, None, f"no evaluation: {yaml} has no labelled split {split or ''}")
    if spec.num_classes != meta.num_classes:
        return EvalPlan(
            None,
            None,
            f"no evaluation: {yaml} has {spec.num_classes} classes, the model {meta.num_classes}",
        )
    return EvalPlan(spec, name, f"{spec.name} / {name} ({yaml})")


def evaluate_demo(
    segmenter: Segmenter,
    plan: EvalPlan,
    out_dir: str | os.PathLike[str],
    *,
    num_workers: int = 2,
    progress: bool = True,
) -> EvalResult | None:
    """Score the planned split (``None`` when there is none) and write ``evaluation.json`` and
    ``evaluation_confusion.png`` into ``out_dir``."""
    if plan.spec is None or plan.split is None:
        return None
    result = evaluate(segmenter, plan.spec, plan.split, num_workers=num_workers, progress=progress)
    write_report(result, Path(out_dir) / "evaluation.json")
    return result
