"""``pixelwise data split``: train/val/test splits by ratio, stratified by class presence, by seed.

Stratification follows iterative stratification for multi-label data (Sechidis, Tsoumakas and Vlahavas,
"On the stratification of multi-label data", ECML PKDD 2011): an image's labels are the classes present
in its mask; the rarest class still unassigned is handled first, and each of its images goes to the
split that most lacks that class (ties: the split that most lacks images, then a seeded coin). Rare
classes therefore land in every split in proportion, which a plain shuffle does not promise.

The unit is a group of samples that must stay together: the samples of one image file (all slices of a
NIfTI volume), so no case straddles two splits. The same dataset, ratios and seed always give the same
splits.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .._atomic import write_text_atomic
from ..errors import PixelwiseError
from .formats import read_sample_mask
from .spec import DatasetSpec, Sample, decode_mask, resolve_split

__all__ = ["parse_ratios", "stratified_split", "split_dataset"]


def parse_ratios(text: str, names: Sequence[str]) -> list[float]:
    """``"0.7,0.15,0.15"`` (or ``"70,15,15"``) → fractions summing to 1, one per split name."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise PixelwiseError(f"--ratios {text!r}: expected numbers separated by commas") from None
    if len(values) != len(names):
        raise PixelwiseError(
            f"--ratios {text!r}: {len(values)} ratios for {len(names)} splits ({', '.join(names)})"
        )
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise PixelwiseError(f"--ratios {text!r}: ratios must be non-negative with a positive sum")
    total = sum(values)
    return [v / total for v in values]


def stratified_split(labels: Sequence[set[int]], ratios: Sequence[float], seed: int) -> list[int]:
    """Assign each item (its set of labels) to a split, by iterative stratification.

    Returns:
        The split index of each item.
    """
    rng = np.random.default_rng(seed)
    n, k = len(labels), len(ratios)
    ratios_arr = np.asarray(ratios, np.float64)
    want_items = ratios_arr * n
    classes = sorted({c for ls in labels for c in ls})
    want = {c: ratios_arr * sum(c in ls for ls in labels) for c in classes}
    assigned = [-1] * n
    left = set(range(n))
    order = rng.permutation(n)  # the seeded visiting order within a class

    def put(i: int, j: int) -> None:
        assigned[i] = j
        left.discard(i)
        want_items[j] -= 1
        for c in labels[i]:
            want[c][j] -= 1

    def pick(scores: list[np.ndarray]) -> int:
        best = np.lexsort([rng.random(k)] + [-s for s in reversed(scores)])
        return int(best[0])

    while True:
        counts = {c: sum(1 for i in left if c in labels[i]) for c in classes}
        counts = {c: m for c, m in counts.items() if m > 0}
        if not counts:
            break
        rarest = min(counts, key=lambda c: (counts[c], c))
        for i in order:
            if i in left and rarest in labels[i]:
                put(int(i), pick([want[rarest], want_items]))
    for i in order:  # items with no label at all
        if i in left:
            put(int(i), pick([want_items]))
    return assigned


def _present(sample: Sample, spec: DatasetSpec) -> tuple[set[int], str | None]:
    try:
        labels, bad = decode_mask(read_sample_mask(sample, spec), spec)
    except PixelwiseError as exc:
        msg = str(exc)
        return set(), msg if str(sample.mask) in msg else f"{sample.where}: {msg}"
    if bad:
        return set(), f"{sample.where}: mask values outside the declared classes: {', '.join(bad)}"
    counts = np.bincount(labels.reshape(-1), minlength=256)[: spec.num_classes]
    return set(np.flatnonzero(counts).tolist()), None


def split_dataset(
    spec: DatasetSpec,
    out: str | os.PathLike[str],
    *,
    source: str,
    names: Sequence[str] = ("train", "val", "test"),
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    workers: int | None = None,
) -> dict[str, Any]:
    """Split the samples of split ``source`` and write the result into folder ``out``.

    Writes ``<name>.txt`` per split (lines ``image mask`` relative to the dataset root, with a tab
    instead of the space where a path holds white space; an item inside a container file is written
    as ``image mask#index``), and ``dataset.yaml``: the dataset with its
    splits replaced by the new ones (as ``stems`` of ``source``), readable by every command.

    Returns:
        A summary: per split, the number of groups, samples, and images holding each class.

    Raises:
        PixelwiseError: ``out`` is the dataset folder, a list file exists there already, a mask is
            unreadable or holds undeclared values, or two groups share a stem.
    """
    out = Path(out)
    if out.resolve() == spec.root.resolve():
        raise PixelwiseError(f"{out}: write the split files into a folder of their own")
    existing = [out / f"{n}.txt" for n in names if (out / f"{n}.txt").exists()]
    if existing or (out / "dataset.yaml").exists():
        raise PixelwiseError(f"{(existing or [out / 'dataset.yaml'])[0]}: exists; not overwritten")
    samples, problems = resolve_split(spec, source)
    samples = [s for s in samples if s.mask is not None]
    if problems:
        raise PixelwiseError(
            problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    if not samples:
        raise PixelwiseError(f"split {source!r} of {spec.source}: no labelled samples to split")
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[str(s.image)].append(s)
    keys = list(groups)
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        present = list(pool.map(lambda s: _present(s, spec), samples))
    errors = [p for _, p in present if p]
    if errors:
        raise PixelwiseError(errors[0] + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""))
    by_sample = {(str(s.image), s.index): ls for s, (ls, _) in zip(samples, present, strict=True)}
    labels = [set().union(*(by_sample[(str(s.image), s.index)] for s in groups[g])) for g in keys]
    assignment = stratified_split(labels, ratios, seed)
    stem_of = {g: _stem(groups[g][0], spec) for g in keys}
    if len(set(stem_of.values())) != len(keys):
        dup = next(v for v in stem_of.values() if list(stem_of.values()).count(v) > 1)
        raise PixelwiseError(f"split {source!r}: two images share the stem {dup!r}")
    summary: dict[str, Any] = {"source": source, "seed": seed, "splits": {}}
    out.mkdir(parents=True, exist_ok=True)
    base = spec.split(source).model_dump(by_alias=True, exclude_none=True)
    new_splits = {}
    for j, name in enumerate(names):
        chosen = [g for g, a in zip(keys, assignment, strict=True) if a == j]
        lines = []
        presence = np.zeros(spec.num_classes, np.int64)
        for g in chosen:
            for s in groups[g]:
                lines.append(_line(s, spec.root))
            for c in labels[keys.index(g)]:
                presence[c] += 1
        write_text_atomic(out / f"{name}.txt", "\n".join(lines) + ("\n" if lines else ""))
        new_splits[name] = {**base, "stems": sorted(stem_of[g] for g in chosen)}
        summary["splits"][name] = {
            "groups": len(chosen),
            "samples": sum(len(groups[g]) for g in chosen),
            "class_presence": {c: int(presence[i]) for i, c in enumerate(spec.class_names)},
        }
    doc = spec.model_dump(mode="json", exclude={"source", "root", "splits"}, exclude_defaults=True)
    doc = {
        "name": spec.name,
        "root": os.path.relpath(spec.root.resolve(), out.resolve()),
        **doc,
        "splits": new_splits,
    }
    head = (
        f"# written by pixelwise data split from {spec.source}, split {source!r}, seed {seed}, "
        f"ratios {', '.join(f'{r:.3g}' for r in ratios)}\n"
    )
    write_text_atomic(out / "dataset.yaml", head + yaml.safe_dump(doc, sort_keys=False, width=100))
    return summary


def _stem(sample: Sample, spec: DatasetSpec) -> str:
    if spec.format == "nifti":
        from .formats.nifti import volume_stem

        return volume_stem(sample.image)
    return sample.image.stem


def _line(sample: Sample, root: Path) -> str:
    def rel(p: Path) -> str:
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    image = rel(sample.image)
    mask = rel(sample.mask) + (f"#{sample.index}" if sample.index is not None else "")
    spaced = any(c.isspace() for c in image + mask)  # a tab separates paths holding spaces
    return f"{image}\t{mask}" if spaced else f"{image} {mask}"
