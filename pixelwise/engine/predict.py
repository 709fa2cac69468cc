"""Prediction over files: class-index PNGs with the class palette, overlays, optional probabilities —
refined by the dense CRF when the segmenter has one (DeepLab v1 by default).

Every output is written atomically. An unreadable input is reported and skipped; the others are still
written, and the summary says which failed.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .._atomic import atomic_path
from ..data.io import IMAGE_EXTENSIONS, read_image, write_png
from ..errors import PixelwiseError
from .predictor import Segmenter
from .visualize import mask_image, overlay_with_legend

__all__ = ["PredictSummary", "expand_inputs", "predict_files"]


@dataclass
class PredictSummary:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)


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
            if not files:
                failed.append((item, "folder holds no images"))
            found.extend(files)
        elif os.path.exists(item):
            found.append(Path(item))
        else:
            failed.append((item, "no such file or folder"))
    return list(dict.fromkeys(found)), failed


def _output_stems(paths: list[Path]) -> list[str]:
    """Output names: the file stem, prefixed by its folder where two inputs share a stem."""
    stems = [p.stem for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{p.parent.name}_{p.stem}" if p.stem in dup else p.stem for p in paths]


def predict_files(
    segmenter: Segmenter,
    inputs: list[str],
    out_dir: str | os.PathLike[str],
    *,
    probs: bool = False,
    overlay: bool = True,
    progress: bool = True,
) -> PredictSummary:
    """Predict every input image; write ``<stem>.png`` (+ ``_overlay.png``, ``_probs.npy``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, failed = expand_inputs(inputs)
    summary = PredictSummary(failed=failed)
    meta = segmenter.meta
    for path, stem in tqdm(
        list(zip(paths, _output_stems(paths), strict=True)),
        desc="predict",
        unit="img",
        disable=not progress,
    ):
        try:
            image = read_image(path, meta.in_channels)
        except PixelwiseError as exc:
            summary.failed.append((str(path), str(exc)))
            continue
        logits = segmenter.logits(segmenter.preprocess(image)[None])
        probs_t, labels_t = segmenter.decide(logits, image[None] if segmenter.crf else None)
        labels = labels_t[0].to(torch.uint8).cpu().numpy()
        write_png(out / f"{stem}.png", mask_image(labels, meta.colors))
        summary.written.append(out / f"{stem}.png")
        if overlay:
            write_png(
                out / f"{stem}_overlay.png",
                overlay_with_legend(image, labels, meta.colors, meta.class_names),
            )
        if probs:
            with atomic_path(out / f"{stem}_probs.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, probs_t[0].cpu().numpy().astype(np.float32))
    return summary
