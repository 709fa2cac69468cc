"""Prediction over files: class-index masks with the class palette, overlays, optional probabilities —
through the one prediction path of :class:`~pixelwise.engine.predictor.Segmenter` (whole image or
sliding windows, test-time augmentation, the dense CRF).

Folders are predicted with a DataLoader: images are decoded by worker processes while the model runs,
and consecutive images of one size go through the model as one batch. A run is resumable: an input
whose mask already exists is skipped (``overwrite`` redoes it). Every output is written atomically,
so an interrupted run leaves only whole files. An unreadable input is reported and skipped; the others
are still written, and the summary says which failed.

Outputs: ``<name>.png`` (palette PNG of class indices) for ordinary images; for TIFF inputs
``<name>.tif`` — a GeoTIFF with the source's CRS and transform when the input is georeferenced, so the
mask lines up with its source. Overlays are written for images up to :data:`MAX_OVERLAY_PIXELS`.
``<name>`` is the input's stem unless that would make two outputs of the run (or an output and an
input) one file: :func:`output_names` gives the rule, which ``pixelwise demo`` shares. SIGTERM stops a
run as Ctrl-C does; a new run into the same folder removes the temporary files a killed one left.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .._atomic import atomic_path, write_text_atomic
from ..data.io import IMAGE_EXTENSIONS, read_image, write_png
from ..data.rasters import GeoRef, is_raster_path, read_raster, write_label_raster
from ..errors import PixelwiseError, first_line
from .distributed import DistContext, all_gather_objects, current_context, shard
from .guard import remove_stale_temp_files, terminate_as_interrupt
from .predictor import Prediction, Segmenter
from .regions import regions_summary
from .visualize import mask_image, overlay_with_legend

__all__ = [
    "MAX_OVERLAY_PIXELS",
    "PredictSummary",
    "expand_inputs",
    "output_names",
    "output_path",
    "predict_files",
]


# Overlays of larger images (a 10,000 × 10,000 orthophoto) are not written: a second full-size RGB
# image of little use at that size.
MAX_OVERLAY_PIXELS = 4096 * 4096


_Summary = TypeVar("_Summary")


@dataclass
class PredictSummary:
    """What a prediction run did: masks written, inputs skipped because their mask existed, failures
    (input, reason), inputs written under another name than their stem (input, mask written; see
    :func:`output_names`), images per second of the images predicted."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    renamed: list[tuple[Path, Path]] = field(default_factory=list)

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


def _folders(path: Path) -> list[str]:
    """The folders of ``path`` made absolute, outermost first, without the root or drive."""
    return os.path.normpath(os.path.abspath(path)).split(os.sep)[1:-1]


def _name_at(path: Path, level: int) -> str:
    """The output name of ``path`` at a level >= 1 of :func:`output_names`' rule: the file name,
    then with one folder more per level up to the whole path, then numbered ``~2``, ``~3``, ..."""
    if level == 1:
        return path.name
    folders = _folders(path)
    extra = level - 1 - len(folders)
    name = "_".join([*folders[len(folders) - min(level - 1, len(folders)) :], path.name])
    return f"{name}~{extra + 1}" if extra > 0 else name


def output_names(
    paths: Sequence[Path],
    suffixes: Callable[[Path], Iterable[str]],
    out_dir: str | os.PathLike[str],
    *,
    reserved: Iterable[str] = (),
) -> list[str]:
    """Output names for ``paths``, distinct and the same whatever the order of the inputs.

    Each input writes the files ``name + suffix`` for its ``suffixes`` (e.g. ``.png``,
    ``_overlay.png``; asked once per file extension). Its name is the first of these that makes
    none of its files one of another input's files, a ``reserved`` file or an input file in
    ``out_dir`` (names compared ignoring case, as on macOS and Windows): the stem (``a``); the file
    name (``a.jpg``); the folder and file name (``day1_a.jpg``), then with more folders
    (``cam1_day1_a.jpg``) up to the whole path. Inputs that clash all move on together. Where even
    the whole paths clash (names differing only in case), the first in path order keeps the name
    and the others get ``~2``, ``~3``, ... Linear in the number of inputs: only clashing names are
    looked at again.
    """
    out, here = os.path.realpath(out_dir), {}  # folder -> whether it is out_dir
    names, ends, taken = [], [], {n.casefold() for n in reserved}
    by_ext: dict[str, tuple[str, ...]] = {}
    for p in paths:
        folder, name = os.path.split(os.fspath(p))
        if folder not in here:
            here[folder] = os.path.realpath(folder or ".") == out
        if here[folder]:  # an input in the output folder: no output may replace it
            taken.add(name.casefold())
        dot = name.rfind(".")  # stem and suffix as pathlib has them
        stem, ext = (name[:dot], name[dot:]) if 0 < dot < len(name) - 1 else (name, "")
        if ext not in by_ext:
            by_ext[ext] = tuple(end.casefold() for end in suffixes(p))
        names.append(stem)
        ends.append(by_ext[ext])
    level = [0] * len(paths)
    # every file of every input, and the first input that writes it (built in C loops)
    keys = [stem.casefold() + end for stem, group in zip(names, ends, strict=True) for end in group]
    writers = [i for i, group in enumerate(ends) for _ in group]
    first = dict(zip(reversed(keys), reversed(writers), strict=True))
    owners: dict[str, list[int]] = {}  # the files of more than one input, and who writes them
    if len(first) < len(keys):
        counts = Counter(keys)
        for key, i in zip(keys, writers, strict=True):
            if counts[key] > 1:
                owners.setdefault(key, []).append(i)
    dirty = set(owners) | (taken & first.keys())  # the files to look at again
    del keys, writers

    def claim(i: int) -> None:
        base = names[i].casefold()
        for end in ends[i]:
            key = base + end
            j = first.setdefault(key, i)
            if j != i:
                owners.setdefault(key, [j]).append(i)
            if j != i or key in taken:
                dirty.add(key)

    while dirty:  # every input that clashes moves on, all at once: the input order cannot matter
        moving: set[int] = set()
        for key in dirty:
            who = owners.get(key) or ([first[key]] if key in first else [])
            if key in taken:
                moving.update(who)
            elif len(who) > 1:
                # those named by their whole path already: the first in path order keeps it
                last = [i for i in who if level[i] and level[i] > len(_folders(paths[i]))]
                keep = min(last, key=lambda i: (str(paths[i]), i), default=-1)
                moving.update(i for i in who if i != keep)
        dirty.clear()
        for i in sorted(moving):
            base = names[i].casefold()
            for end in ends[i]:
                _release(first, owners, base + end, i)
            level[i] += 1
            names[i] = _name_at(paths[i], level[i])
            claim(i)
    return names


def _release(first: dict[str, int], owners: dict[str, list[int]], key: str, i: int) -> None:
    """Input ``i`` no longer writes the file ``key`` (:func:`output_names`' book-keeping)."""
    who = owners.pop(key, None) or [first[key]]
    who.remove(i)
    if who:
        first[key] = who[0]
        if len(who) > 1:
            owners[key] = who
    else:
        del first[key]


def _suffixes(path: Path) -> tuple[str, ...]:
    """The files ``predict`` may write for an input, whatever the options (so that names, and
    resuming, do not depend on them)."""
    return (
        ".tif" if is_raster_path(path) else ".png",
        "_overlay.png",
        "_probs.npy",
        "_regions.json",
    )


def output_path(out_dir: Path, source: Path, stem: str) -> Path:
    """The mask written for ``source`` under the name ``stem`` (:func:`output_names`):
    ``<stem>.tif`` for TIFF inputs, else ``<stem>.png``."""
    return out_dir / f"{stem}{_suffixes(source)[0]}"


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
    """Predict every input image; write ``<name>.png`` or ``<name>.tif`` (+ ``_overlay.png``,
    ``_probs.npy``, ``_regions.json``) in ``out_dir``, ``<name>`` being the input's stem unless
    that would make two outputs, or an output and an input, one file (:func:`output_names`). In a
    process group (torchrun) each process predicts every ``WORLD_SIZE``-th input and writes its
    own files; the summary returned covers all processes. SIGTERM stops the run as Ctrl-C does
    (``KeyboardInterrupt``, no temporary file left); a run into the same ``out_dir`` removes the
    temporary files that a killed run left for its outputs.

    Args:
        segmenter: the model and how to run it.
        inputs: image files, folders (searched recursively) and glob patterns.
        out_dir: output folder (created).
        probs: also write the class probabilities (K×H×W float32 ``.npy``).
        overlay: also write the image with the mask blended over it and a legend.
        regions: also write ``<name>_regions.json``: the classes present with pixel counts and area
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
    ctx = current_context()
    summary = PredictSummary(failed=failed if ctx.is_main else [])
    todo = _plan(out, paths, ctx, overwrite=overwrite, summary=summary)
    if not todo:
        return gathered(summary, ctx)
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
            if todo[i][1] != output_path(todo[i][1].parent, todo[i][0], todo[i][0].stem):
                summary.renamed.append(todo[i])
        bar.update(len(pending))
        pending.clear()

    # SIGTERM stops the run as Ctrl-C does: a write in progress removes its temporary file
    with terminate_as_interrupt():
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
    return gathered(summary, ctx)


def gathered(summary: _Summary, ctx: DistContext) -> _Summary:
    """Every process's summary in one (a run summary: list fields and ``seconds``): the lists
    joined in rank order; the run took as long as its slowest process."""
    if not ctx.enabled:
        return summary
    parts = all_gather_objects(summary)
    values = {
        f.name: max(getattr(s, f.name) for s in parts)
        if f.name == "seconds"
        else [x for s in parts for x in getattr(s, f.name)]
        for f in dataclasses.fields(summary)
    }
    return type(summary)(**values)


def _plan(
    out: Path, paths: list[Path], ctx: DistContext, *, overwrite: bool, summary: PredictSummary
) -> list[tuple[Path, Path]]:
    """This process's (input, mask) pairs to predict, named by :func:`output_names` over all the
    inputs. Under torchrun each process takes its share by position in the whole list (decided
    before any output exists, so no share depends on another process's progress). The temporary
    files that a killed run left for this share's outputs are removed; an input whose mask exists is
    skipped unless ``overwrite``; an input whose output would be an input file (a link into
    ``out``) is refused."""
    mine = shard(list(zip(paths, output_names(paths, _suffixes, out), strict=True)), ctx)
    remove_stale_temp_files(out, (name + end for path, name in mine for end in _suffixes(path)))
    present = set(os.listdir(out))
    inputs: dict[tuple[int, int], Path] | None = None
    todo: list[tuple[Path, Path]] = []
    for path, name in mine:
        target = output_path(out, path, name)
        if target.name in present and target.exists() and not overwrite:
            summary.skipped.append(target)
            continue
        there = [out / (name + end) for end in _suffixes(path) if name + end in present]
        if there and inputs is None:  # an existing output may be an input (a link): look once
            inputs = {key: p for p in paths if (key := _identity_of(p)) is not None}
        clash = [(f, inputs[k]) for f in there if (k := _identity_of(f, follow=False)) in inputs]
        if clash:
            output, source = clash[0]
            summary.failed.append(
                (str(path), f"not written: its output {output} is the input {source}")
            )
            continue
        todo.append((path, target))
    return todo


def _identity_of(path: Path, *, follow: bool = True) -> tuple[int, int] | None:
    """(device, inode) of a file, or ``None`` when it cannot be looked at."""
    try:
        st = os.stat(path, follow_symlinks=follow)
    except OSError:
        return None
    return st.st_dev, st.st_ino


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
