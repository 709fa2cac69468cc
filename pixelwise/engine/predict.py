"""Prediction over files: class-index masks with the class palette, overlays, optional probabilities —
through the one prediction path of :class:`~pixelwise.engine.predictor.Segmenter` (whole image or
sliding windows, test-time augmentation, the dense CRF).

Folders are predicted with a DataLoader: images are decoded by worker processes while the model runs,
and consecutive images of one size go through the model as one batch. A run is resumable: an input
whose mask already exists is skipped (``overwrite`` redoes it). Every output is written atomically,
so an interrupted run leaves only whole files. An unreadable input is reported and skipped; the others
are still written, and the summary says which failed.

Outputs: ``<stem>.png`` (palette PNG of class indices) for ordinary images; for TIFF inputs
``<stem>.tif`` — a GeoTIFF with the source's CRS and transform when the input is georeferenced, so the
mask lines up with its source. Overlays are written for images up to :data:`MAX_OVERLAY_PIXELS`.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .._atomic import atomic_path, write_text_atomic
from ..data.io import IMAGE_EXTENSIONS, read_image, write_png
from ..data.rasters import GeoRef, is_raster_path, read_raster, write_label_raster
from ..errors import PixelwiseError, first_line
from .distributed import DistContext, all_gather_objects, current_context, shard
from .predictor import Prediction, Segmenter
from .regions import regions_summary
from .visualize import mask_image, overlay_with_legend

__all__ = ["MAX_OVERLAY_PIXELS", "PredictSummary", "expand_inputs", "output_path", "predict_files"]

# Overlays of larger images (a 10,000 × 10,000 orthophoto) are not written: a second full-size RGB
# image of little use at that size.
MAX_OVERLAY_PIXELS = 4096 * 4096


@dataclass
class PredictSummary:
    """What a prediction run did: masks written, inputs skipped because their mask existed, failures
    (input, reason), images per second of the images predicted."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (recursively, image extensions) and glob patterns → image paths, and failures."""
    found: list[Path] = []
    failed: list[tuple[str, str]] = []
    for item in inputs:
        if any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                failed.append((item, "pattern matched no files"))
            found.extend(files)
        elif os.path.isdir(item):
            files = sorted(
                p
                for p in Path(item).rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
            failed.extend(
                (str(p), "symbolic link loop or broken link, not an image")
                for p in sorted(Path(item).rglob("*"))
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_symlink() and not p.exists()
            )
            if not files:
                failed.append((item, "folder holds no images"))
            found.extend(files)
        elif os.path.lexists(item):  # a looping or broken link too: the reader names the reason
            found.append(Path(item))
        else:
            failed.append((item, "no such file or folder"))
    return list(dict.fromkeys(found)), failed


def _output_stems(paths: list[Path]) -> list[str]:
    """Output names: the file stem, prefixed by its folder where two inputs share a stem."""
    stems = [p.stem for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{p.parent.name}_{p.stem}" if p.stem in dup else p.stem for p in paths]


def output_path(out_dir: Path, source: Path, stem: str) -> Path:
    """The mask written for ``source``: ``<stem>.tif`` for TIFF inputs, else ``<stem>.png``."""
    return out_dir / f"{stem}{'.tif' if is_raster_path(source) else '.png'}"


class _Images(Dataset):
    """Decodes one input per item (in a worker process): ``(index, image, georef, error)``."""

    def __init__(self, paths: list[Path], channels: int) -> None:
        self.paths, self.channels = paths, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, dict | None, str | None]:
        path = self.paths[i]
        try:
            if is_raster_path(path):
                raster = read_raster(path, self.channels)
                geo = None if raster.georef is None else raster.georef.to_dict()
                return i, raster.image, geo, None
            return i, read_image(path, self.channels), None, None
        except PixelwiseError as exc:
            return i, None, None, str(exc)


def _identity(item):  # noqa: ANN001, ANN202 - a DataLoader collate_fn must be picklable
    return item


def predict_files(
    segmenter: Segmenter,
    inputs: list[str],
    out_dir: str | os.PathLike[str],
    *,
    probs: bool = False,
    overlay: bool = True,
    regions: bool = False,
    overwrite: bool = False,
    batch_size: int = 4,
    num_workers: int = 2,
    progress: bool = True,
) -> PredictSummary:
    """Predict every input image; write ``<stem>.png`` or ``<stem>.tif`` (+ ``_overlay.png``,
    ``_probs.npy``) in ``out_dir``. In a process group (torchrun) each process predicts every
    ``WORLD_SIZE``-th input and writes its own files; the summary returned covers all processes.

    Args:
        segmenter: the model and how to run it.
        inputs: image files, folders (searched recursively) and glob patterns.
        out_dir: output folder (created).
        probs: also write the class probabilities (K×H×W float32 ``.npy``).
        overlay: also write the image with the mask blended over it and a legend.
        regions: also write ``<stem>_regions.json``: the classes present with pixel counts and area
            fractions, and their connected regions with bounding boxes and areas
            (:func:`pixelwise.engine.regions.regions_summary`, as ``pixelwise serve`` returns).
        overwrite: predict inputs whose mask already exists (otherwise they are skipped).
        batch_size: same-size images per forward pass.
        num_workers: decoding processes (0: decode in this process).
        progress: show a progress bar (images per second).
    """
    if batch_size < 1:
        raise PixelwiseError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, failed = expand_inputs(inputs)
    # under torchrun each process takes its share of the inputs, by position in the whole list
    # (decided before any output exists, so no process's share depends on another's progress)
    ctx = current_context()
    summary = PredictSummary(failed=failed if ctx.is_main else [])
    todo: list[tuple[Path, Path]] = []
    for path, stem in shard(list(zip(paths, _output_stems(paths), strict=True)), ctx):
        target = output_path(out, path, stem)
        if target.exists() and not overwrite:
            summary.skipped.append(target)
        else:
            todo.append((path, target))
    if not todo:
        return _gathered(summary, ctx)
    loader = DataLoader(
        _Images([p for p, _ in todo], segmenter.meta.in_channels),
        batch_size=None,
        collate_fn=_identity,
        num_workers=min(num_workers, len(todo)),
    )
    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress)
    pending: list[tuple[int, np.ndarray, dict | None]] = []
    t0 = time.perf_counter()

    def flush() -> None:
        try:
            preds = segmenter.segment_batch([im for _, im, _ in pending], probs=probs)
        except (PixelwiseError, RuntimeError) as exc:  # this batch fails, the run goes on
            reason = first_line(exc)
            summary.failed.extend((str(todo[i][0]), reason) for i, _, _ in pending)
            preds = []
        for (i, image, geo), pred in zip(pending, preds, strict=False):
            try:
                _write(
                    segmenter,
                    image,
                    pred,
                    todo[i][1],
                    geo,
                    overlay=overlay,
                    probs=probs,
                    regions=regions,
                )
            except (PixelwiseError, OSError) as exc:  # e.g. disk full: nothing partial is left
                summary.failed.append((str(todo[i][0]), f"cannot write output: {first_line(exc)}"))
                continue
            summary.written.append(todo[i][1])
        bar.update(len(pending))
        pending.clear()

    try:
        for i, image, geo, error in loader:
            if error is not None:
                summary.failed.append((str(todo[i][0]), error))
                bar.update(1)
                continue
            if pending and (pending[0][1].shape != image.shape or len(pending) >= batch_size):
                flush()
            pending.append((i, image, geo))
        if pending:
            flush()
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0
    return _gathered(summary, ctx)


def _gathered(summary: PredictSummary, ctx: DistContext) -> PredictSummary:
    """Every process's summary in one (rank order); the run took as long as its slowest process."""
    if not ctx.enabled:
        return summary
    parts = all_gather_objects(summary)
    return PredictSummary(
        written=[p for s in parts for p in s.written],
        skipped=[p for s in parts for p in s.skipped],
        failed=[f for s in parts for f in s.failed],
        seconds=max(s.seconds for s in parts),
    )


def _write(
    segmenter: Segmenter,
    image: np.ndarray,
    pred: Prediction,
    target: Path,
    geo: dict | None,
    *,
    overlay: bool,
    probs: bool,
    regions: bool,
) -> None:
    """Overlay and probabilities first, the mask last: the mask marks an input as done. If any write
    fails, the side files already written for this input are removed: no input is half done."""
    meta = segmenter.meta
    stem = target.with_suffix("")
    done: list[Path] = []
    try:
        if overlay and image.shape[0] * image.shape[1] <= MAX_OVERLAY_PIXELS:
            done.append(Path(f"{stem}_overlay.png"))
            write_png(
                done[-1],
                overlay_with_legend(image, pred.labels, meta.colors, meta.class_names),
            )
        if probs and pred.probs is not None:
            done.append(Path(f"{stem}_probs.npy"))
            with atomic_path(done[-1]) as tmp, open(tmp, "wb") as fh:
                np.save(fh, pred.probs.astype(np.float32))
        if regions:
            summary = regions_summary(pred.labels, meta.class_names)
            done.append(Path(f"{stem}_regions.json"))
            write_text_atomic(done[-1], json.dumps(summary, indent=1) + "\n")
        if target.suffix == ".tif":
            write_label_raster(
                target, pred.labels, meta.colors, None if geo is None else GeoRef.from_dict(geo)
            )
        else:
            write_png(target, mask_image(pred.labels, meta.colors))
    except BaseException:
        for path in done:
            path.unlink(missing_ok=True)
        raise
