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

Evaluation: on ``--data`` when given; otherwise on the model's dataset (``camvid``) when
``../shared/data/<dataset>`` and ``configs/data/<dataset>.yaml`` sit beside the current folder or
the repository the package runs from — else skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .._atomic import write_text_atomic
from ..data.io import read_image, write_png
from ..data.spec import DatasetSpec, load_dataset_spec
from ..errors import PixelwiseError, printable
from ..pretrained import DEFAULT_MODEL
from .evaluate import EvalResult, evaluate, write_report
from .loading import load_model
from .predict import expand_inputs, output_names
from .predictor import Segmenter
from .visualize import mask_image, overlay_with_legend

__all__ = [
    "DemoImage",
    "DemoResult",
    "EvalPlan",
    "contact_sheet",
    "evaluate_demo",
    "find_eval_data",
    "format_area",
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


@dataclass
class DemoResult:
    """What :func:`segment_demo` did: images segmented, inputs that failed (input, reason), the
    contact sheet and the summary written."""

    images: list[DemoImage] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    sheet: Path | None = None
    summary: Path | None = None


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


def segment_demo(
    segmenter: Segmenter,
    images: Sequence[str | os.PathLike[str]] = (),
    out_dir: str | os.PathLike[str] = "pixelwise-demo",
    *,
    samples: bool = True,
    max_size: tuple[int, int] | None = None,
) -> DemoResult:
    """Segment the sample photos (:func:`sample_images`) and ``images``; write masks, overlays,
    ``contact_sheet.png`` and ``summary.json`` into ``out_dir`` (files of the same name are
    replaced). Each image's files are named as ``pixelwise predict`` names them
    (:func:`~pixelwise.engine.predict.output_names`): its stem, or more of its path where that
    would make two outputs, an output and an input, or an output and the demo's own files one.

    Args:
        segmenter: the model and how to run it.
        images: more inputs: files, folders (searched recursively) and glob patterns.
        out_dir: output folder (created).
        samples: include the sample photos.
        max_size: (H, W): larger images are scaled down to that many pixels first (a bundle's
            ``input_size``); ``None``: predicted at their own size.

    Raises:
        PixelwiseError: nothing to segment (no sample photos installed and no images given).
    """
    meta = segmenter.meta
    paths = sample_images(meta.in_channels) if samples else []
    more, failed = expand_inputs([os.fspath(p) for p in images])
    paths = list(dict.fromkeys([*paths, *more]))
    if not paths:
        reason = "; ".join(f"{p}: {r}" for p, r in failed) or "no images given"
        none = "no sample photos are installed and " if samples else ""
        raise PixelwiseError(f"nothing to segment: {none}{reason}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(failed=list(failed))
    rows = []
    names = output_names(paths, lambda _: _IMAGE_FILES, out, reserved=_DEMO_FILES)
    for path, name in zip(paths, names, strict=True):
        try:
            image = _fit(read_image(path, meta.in_channels), max_size)
        except PixelwiseError as exc:
            result.failed.append((str(path), str(exc)))
            continue
        labels = segmenter.segment(image).labels
        overlay = overlay_with_legend(image, labels, meta.colors, meta.class_names)
        item = DemoImage(
            source=path,
            name=name,
            size=(int(image.shape[0]), int(image.shape[1])),
            areas=_areas(labels, meta.class_names),
            mask=out / f"{name}.png",
            overlay=out / f"{name}_overlay.png",
        )
        write_png(item.overlay, overlay)
        write_png(item.mask, mask_image(labels, meta.colors))
        result.images.append(item)
        h, w = item.size
        blend = overlay.crop((0, 0, w, h))
        rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
        rows.append(
            (printable(f"{path.name}  ({w} x {h})"), Image.fromarray(rgb), blend, item.areas)
        )
    if rows:
        result.sheet = out / "contact_sheet.png"
        colors = dict(zip(meta.class_names, meta.colors, strict=False))
        write_png(result.sheet, contact_sheet(rows, colors))
    result.summary = out / "summary.json"
    summary = {
        "images": [
            {
                "source": printable(i.source),
                "mask": printable(i.mask.name),
                "overlay": printable(i.overlay.name),
                "size": list(i.size),
                "areas": {n: round(f, 6) for n, f in i.areas},
            }
            for i in result.images
        ],
        "failed": [{"input": printable(p), "reason": printable(r)} for p, r in result.failed],
        "classes": meta.class_names,
    }
    write_text_atomic(result.summary, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return result


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
