"""``pixelwise data inspect``: what a dataset holds, before any training.

Per split: image counts, sizes and channels, class pixel frequencies and per-image presence, images
with no labelled pixel, the raw mask values found against the declared ones, and images shared
between splits (the same file, or the same pixels under another name, by a hash of the decoded
image). The report is a plain dict (JSON), a text summary and a PNG figure (class histogram, size
scatter, a grid of sample overlays).

Every sample is read once (in parallel threads), whatever the number of splits it belongs to; an
unreadable file becomes a problem line naming it, and the rest is still inspected.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, write_text_atomic
from ..errors import PixelwiseError, printable
from .classes import IGNORE_INDEX
from .encodings import describe_values, value_sort_key
from .formats import read_sample_image, read_sample_mask
from .spec import DatasetSpec, Sample, decode_mask, resolve_split
from .survey import lossy_hint, value_ranges

__all__ = ["inspect_dataset", "report_text", "write_reports", "SampleStats"]

_MAX_VALUES = 4096  # raw mask values listed per split in the JSON (the most frequent)
_COUNTED = 24  # up to this many values, the text gives each one's pixel count
_WIDTH = 100  # characters per line of the text's value list ...
_MAX_LINES = 12  # ... and its lines: any set of 8-bit values fits, as runs ("0-11, 255")
_MAX_FILES_SHOWN = 3  # mask files named per undeclared value in a problem line
_MAX_FILES_LISTED = 20  # ... and in the JSON's undeclared_files


@dataclass
class SampleStats:
    """What one sample holds."""

    height: int = 0
    width: int = 0
    mode: str = ""  # the stored image's mode (Pillow's, e.g. RGB, L, P, I;16) or "volume"
    digest: str = ""  # hash of the decoded image pixels
    class_pixels: np.ndarray | None = None  # per class (labelled pixels)
    ignored: int = 0
    raw_values: dict[str, int] = field(default_factory=dict)
    undeclared: dict[str, int] = field(default_factory=dict)
    problem: str | None = None


def _mode(sample: Sample, spec: DatasetSpec) -> str:
    if spec.format == "nifti":
        return "volume"
    from PIL import Image

    try:
        with Image.open(sample.image) as im:
            return f"{im.mode}"
    except Exception:  # noqa: BLE001 - the mode is informative only; reading reports the error
        return "?"


def _raw_values(raw: np.ndarray) -> dict[str, int]:
    if raw.ndim == 3:
        flat = raw.reshape(-1, raw.shape[2]).astype(np.int64)
        code = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
        vals, counts = np.unique(code, return_counts=True)
        return {
            f"rgb({v >> 16},{(v >> 8) & 255},{v & 255})": int(c)
            for v, c in zip(vals.tolist(), counts.tolist(), strict=True)
        }
    vals, counts = np.unique(raw, return_counts=True)
    return {str(v): int(c) for v, c in zip(vals.tolist(), counts.tolist(), strict=True)}


def _inspect_one(sample: Sample, spec: DatasetSpec) -> SampleStats:
    st = SampleStats(mode=_mode(sample, spec))
    try:
        image = read_sample_image(sample, spec)
    except PixelwiseError as exc:
        st.problem = str(exc)
        return st
    st.height, st.width = image.shape[:2]
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.shape}".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    st.digest = h.hexdigest()
    if sample.mask is None:
        return st
    try:
        raw = read_sample_mask(sample, spec)
        labels, bad = decode_mask(raw, spec)
    except PixelwiseError as exc:
        msg = str(exc)
        st.problem = msg if str(sample.mask) in msg else f"{sample.where}: {msg}"
        return st
    if labels.shape != image.shape[:2]:
        st.problem = (
            f"{sample.where}: mask size {labels.shape[1]}x{labels.shape[0]} != image size "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    st.raw_values = _raw_values(raw)
    st.undeclared = bad
    counts = np.bincount(labels.reshape(-1), minlength=256)
    st.class_pixels = counts[: spec.num_classes].astype(np.int64)
    st.ignored = int(counts[IGNORE_INDEX])
    return st


def _key(s: Sample) -> tuple[str, str, int | None]:
    return (str(s.image), str(s.mask), s.index)


def _name(s: Sample, root: Path | None = None) -> str:
    """The image for the report: relative to the dataset root where it lies inside it."""
    path = s.image
    if root is not None and path.is_relative_to(root):
        path = path.relative_to(root)
    return str(path) + (f"[{s.index}]" if s.index is not None else "")


def _mask_name(s: Sample, root: Path | None = None) -> str:
    """The mask file for the report, relative to the dataset root where it lies inside it."""
    path = s.mask if s.mask is not None else s.image
    if root is not None and path.is_relative_to(root):
        path = path.relative_to(root)
    return str(path) + (f" [item {s.index}]" if s.index is not None else "")


def inspect_dataset(
    spec: DatasetSpec, splits: Sequence[str] | None = None, *, workers: int | None = None
) -> dict[str, Any]:
    """Inspect ``splits`` (default: all) of a dataset.

    Returns:
        The report as a JSON-ready dict: ``dataset``, ``classes``, ``splits`` (per split: counts,
        sizes, channels, class pixels and presence, empty images, mask values, undeclared values
        with their pixel counts and the mask files holding them, problems) and
        ``overlaps`` (images shared between splits).
    """
    names = list(splits or spec.splits)
    resolved: dict[str, list[Sample]] = {}
    pairing: dict[str, list[str]] = {}
    for name in names:
        resolved[name], pairing[name] = resolve_split(spec, name)
    unique = list({_key(s): s for ss in resolved.values() for s in ss}.values())
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        stats = dict(
            zip(
                (_key(s) for s in unique),
                pool.map(lambda s: _inspect_one(s, spec), unique),
                strict=True,
            )
        )
    k = spec.num_classes
    report: dict[str, Any] = {
        "dataset": spec.name,
        "source": spec.source,
        "format": spec.format,
        "classes": [
            {"index": i, "name": c.name, "color": list(spec.colors[i])}
            for i, c in enumerate(spec.classes)
        ],
        "declared_values": spec.mask.codec.declared(spec),
        "notes": spec.notes,
        "splits": {},
    }
    for name in names:
        samples = resolved[name]
        pixels = np.zeros(k, np.int64)
        presence = np.zeros(k, np.int64)
        ignored = 0
        sizes: Counter[str] = Counter()
        modes: Counter[str] = Counter()
        raw_values: Counter[str] = Counter()
        undeclared: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        undeclared_in: dict[str, list[str]] = defaultdict(list)  # value → mask files
        empty, problems = [], list(pairing[name])
        labelled = 0
        for s in samples:
            st = stats[_key(s)]
            if st.problem:
                problems.append(st.problem)
            if st.height:
                sizes[f"{st.width}x{st.height}"] += 1
            modes[st.mode] += 1
            if st.class_pixels is None:
                continue
            labelled += 1
            pixels += st.class_pixels
            presence += st.class_pixels > 0
            ignored += st.ignored
            raw_values.update(st.raw_values)
            for v, n in st.undeclared.items():
                undeclared[v][0] += n
                undeclared[v][1] += 1
                undeclared_in[v].append(_mask_name(s, spec.root))
            if st.class_pixels.sum() == 0:
                empty.append(_name(s, spec.root))
        for v, (n, files) in sorted(undeclared.items()):
            where = undeclared_in[v]
            shown = ", ".join(where[:_MAX_FILES_SHOWN]) + (
                f" and {len(where) - _MAX_FILES_SHOWN} more"
                if len(where) > _MAX_FILES_SHOWN
                else ""
            )
            problems.append(
                f"split {name!r}: mask value {v} is not a declared class "
                f"({n} px in {files} file(s): {shown})"
            )
        total = int(pixels.sum())
        report["splits"][name] = {
            "images": len(samples),
            "labelled_images": labelled,
            "sizes": dict(sizes.most_common()),
            "modes": dict(modes.most_common()),
            "class_pixels": {c.name: int(pixels[i]) for i, c in enumerate(spec.classes)},
            "class_fraction": {
                c.name: (float(pixels[i]) / total if total else 0.0)
                for i, c in enumerate(spec.classes)
            },
            "class_presence": {c.name: int(presence[i]) for i, c in enumerate(spec.classes)},
            "ignored_pixels": ignored,
            "absent_classes": [
                c.name for i, c in enumerate(spec.classes) if labelled and presence[i] == 0
            ],
            "empty_images": empty,
            "mask_values": dict(
                sorted(raw_values.most_common(_MAX_VALUES), key=lambda kv: value_sort_key(kv[0]))
            ),
            "mask_values_distinct": len(raw_values),
            "undeclared_values": {v: n for v, (n, _) in sorted(undeclared.items())},
            "undeclared_files": {
                v: {
                    "count": len(undeclared_in[v]),
                    "examples": undeclared_in[v][:_MAX_FILES_LISTED],
                }
                for v in sorted(undeclared)
            },
            "problems": problems,
            "notes": [h]
            if (h := lossy_hint({v: n for v, (n, _) in undeclared.items()}, k))
            else [],
        }
    report["overlaps"] = _overlaps(names, resolved, stats, spec.root)
    return report


def _overlaps(
    names: list[str],
    resolved: dict[str, list[Sample]],
    stats: dict[tuple, SampleStats],
    root: Path,
) -> list[dict[str, Any]]:
    """Per pair of splits: images in both as the same file, and as the same pixels in another file."""
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            files_a = {_name(s, root) for s in resolved[a]}
            files_b = {_name(s, root) for s in resolved[b]}
            same_file = files_a & files_b
            by_digest: dict[str, set[str]] = defaultdict(set)
            for s in resolved[a]:
                d = stats[_key(s)].digest
                if d:
                    by_digest[d].add(_name(s, root))
            copies = []
            for s in resolved[b]:
                d = stats[_key(s)].digest
                n = _name(s, root)
                if d and d in by_digest and n not in same_file:
                    others = sorted(by_digest[d] - {n})
                    if others:
                        copies.append([others[0], n])
            if same_file or copies:
                out.append(
                    {
                        "splits": [a, b],
                        "same_file": len(same_file),
                        "same_pixels": len(copies),
                        "examples": copies[:10] or [[f, f] for f in sorted(same_file)[:3]],
                    }
                )
    return out


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def report_text(report: dict[str, Any]) -> str:
    """A plain-text summary of :func:`inspect_dataset`'s report."""
    lines = [f"dataset {report['dataset']} ({report['format']}), from {report['source']}"]
    lines += [f"note: {n}" for n in report.get("notes", [])]
    names = [c["name"] for c in report["classes"]]
    width = max(8, *(len(n) for n in names))
    for split, r in report["splits"].items():
        lines.append("")
        lines.append(
            f"== split {split}: {r['images']} images ({r['labelled_images']} with masks); "
            f"sizes (WxH) {_top(r['sizes'])}; modes {_top(r['modes'])}"
        )
        total = sum(r["class_pixels"].values())
        all_px = total + r["ignored_pixels"]
        if r["labelled_images"]:
            lines.append(f"   {'class':<{width}} {'pixels':>13} {'%':>7} {'images':>7}")
            for n in names:
                px = r["class_pixels"][n]
                lines.append(
                    f"   {n:<{width}} {_fmt_int(px):>13} {100 * px / max(1, total):>7.2f} "
                    f"{r['class_presence'][n]:>7}"
                )
            lines.append(
                f"   {'(ignored)':<{width}} {_fmt_int(r['ignored_pixels']):>13} "
                f"{100 * r['ignored_pixels'] / max(1, all_px):>7.2f}   (% of all mask pixels)"
            )
            lines += _values_lines(r["mask_values"], r.get("mask_values_distinct", 0))
        if r["absent_classes"] and r["labelled_images"]:
            lines.append(f"   classes never present: {', '.join(r['absent_classes'])}")
        if r["empty_images"]:
            lines.append(
                f"   images with no labelled pixel: {len(r['empty_images'])} "
                f"(e.g. {', '.join(r['empty_images'][:3])})"
            )
        if r["undeclared_values"]:
            lines.append(
                "   UNDECLARED mask values: "
                + ", ".join(f"{v} ({_fmt_int(n)} px)" for v, n in r["undeclared_values"].items())
            )
        lines += [f"   note: {n}" for n in r.get("notes", [])]
        for p in r["problems"][:20]:
            lines.append(f"   problem: {p}")
        if len(r["problems"]) > 20:
            lines.append(f"   ... and {len(r['problems']) - 20} more problem(s) (see the JSON)")
    lines.append("")
    lines.append(describe_values(report["declared_values"]))
    if report["overlaps"]:
        for o in report["overlaps"]:
            a, b = o["splits"]
            lines.append(
                f"overlap {a} / {b}: {o['same_file']} same file(s), {o['same_pixels']} "
                f"identical image(s) under other names"
                + (
                    f" (e.g. {o['examples'][0][0]} = {o['examples'][0][1]})"
                    if o["same_pixels"]
                    else ""
                )
            )
    else:
        lines.append("no image appears in two splits (by file or by pixels)")
    return "\n".join(lines) + "\n"


def _values_lines(values: dict[str, int], distinct: int) -> list[str]:
    """Every raw mask value found: with its pixel count when they are few, else as runs
    (``0-18, 239-255``) wrapped over lines after the three most frequent; only past
    :data:`_MAX_LINES` lines (many colours, 16-bit values) is the rest counted instead of listed."""
    distinct = max(distinct, len(values))
    if distinct <= _COUNTED:
        return [
            f"   mask values found: {', '.join(f'{v}: {_fmt_int(n)}' for v, n in values.items())}"
        ]
    ints = [int(v) for v in values if v.lstrip("-").isdigit()]
    items = [(run, _run_size(run)) for run in value_ranges(ints).split(", ")] if ints else []
    items += [(v, 1) for v in values if not v.lstrip("-").isdigit()]
    total = max(1, sum(values.values()))
    top = sorted(values.items(), key=lambda kv: -kv[1])[:3]
    lines = [
        f"   mask values found: {distinct} distinct; most pixels: "
        + ", ".join(f"{v} ({100 * n / total:.1f}%)" for v, n in top)
    ]
    body, line, shown = [], "     ", 0
    for i, (text, size) in enumerate(items):
        piece = text + ("," if i < len(items) - 1 else "")
        if len(line) + len(piece) > _WIDTH and line.strip():
            if len(body) + 1 == _MAX_LINES:
                break
            body.append(line.rstrip())
            line = "     "
        line += piece + " "
        shown += size
    body.append(line.rstrip())
    lines += body
    if shown < distinct:
        lines.append(
            f"     ... and {distinct - shown} more value(s): --out writes "
            + (
                "them all to inspect.json"
                if len(values) == distinct
                else f"the {len(values)} most frequent to inspect.json"
            )
        )
    return lines


def _run_size(run: str) -> int:
    """How many values a run of :func:`value_ranges` holds (``3``: 1, ``0-18``: 19)."""
    ends = run[1:].split("-", 1)
    return 1 if len(ends) == 1 else int(ends[1]) - int(run[0] + ends[0]) + 1


def _top(d: dict[str, Any], n: int = 4) -> str:
    items = list(d.items())
    s = ", ".join(f"{k} ({v})" if isinstance(v, int) else f"{k}: {v}" for k, v in items[:n])
    return s + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _overlay(
    image: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    rgb = image if image.shape[2] == 3 else np.repeat(image[..., :1], 3, axis=2)
    lut = np.zeros((256, 3), np.float32)
    lut[: len(colors)] = colors
    mixed = (1 - alpha) * rgb.astype(np.float32) + alpha * lut[labels]
    out = np.where((labels == IGNORE_INDEX)[..., None], rgb.astype(np.float32), mixed)
    return out.clip(0, 255).astype(np.uint8)


def _figure(report: dict[str, Any], spec: DatasetSpec, path: Path, samples: list[Sample]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    names = [c["name"] for c in report["classes"]]
    colors = np.asarray(spec.colors, np.float32)
    n_samples = len(samples)
    cols = 4
    rows = (n_samples + cols - 1) // cols
    fig = plt.figure(figsize=(14, 4.2 + 2.6 * rows), constrained_layout=True)
    grid = fig.add_gridspec(1 + rows, cols, height_ratios=[1.6] + [1.0] * rows)
    ax = fig.add_subplot(grid[0, :3])
    splits = [s for s in report["splits"] if report["splits"][s]["labelled_images"]]
    width = 0.8 / max(1, len(splits))
    x = np.arange(len(names))
    for j, s in enumerate(splits):
        frac = [100 * report["splits"][s]["class_fraction"][n] for n in names]
        ax.bar(x + j * width - 0.4 + width / 2, frac, width, label=s)
    many = len(names) > 8
    ax.set_xticks(x, names, rotation=60 if many else 0, ha="right" if many else "center")
    ax.tick_params(axis="x", labelsize=6 if len(names) > 30 else 9)
    ax.set_ylabel("% of labelled pixels")
    fracs = [f for s in splits for f in report["splits"][s]["class_fraction"].values() if f > 0]
    if fracs and max(fracs) / min(fracs) > 20:  # rare classes stay visible
        ax.set_yscale("log")
    ax.set_title(f"{report['dataset']}: class pixel frequency per split")
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(grid[0, 3])
    for s in splits:
        sizes = report["splits"][s]["sizes"]
        if sizes:
            wh = np.array([[int(v) for v in k.split("x")] for k in sizes], float)
            cnt = np.array(list(sizes.values()), float)
            ax2.scatter(wh[:, 0], wh[:, 1], s=20 + 200 * cnt / cnt.max(), alpha=0.5, label=s)
    ax2.set_xlabel("width (px)")
    ax2.set_ylabel("height (px)")
    ax2.set_title("image sizes (area ∝ count)")
    for k, s in enumerate(samples):
        a = fig.add_subplot(grid[1 + k // cols, k % cols])
        a.axis("off")
        try:
            image = read_sample_image(s, spec)
            labels, _ = decode_mask(read_sample_mask(s, spec), spec)
            pic = Image.fromarray(_overlay(image, labels, colors))
            pic.thumbnail((320, 320), Image.Resampling.BILINEAR)  # keeps the PNG small
            a.imshow(np.asarray(pic))
        except PixelwiseError as exc:
            a.text(0.5, 0.5, str(exc)[:60], ha="center", va="center", wrap=True, fontsize=6)
        a.set_title(_name(s).rsplit("/", 1)[-1][:40], fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=72)
    plt.close(fig)


def write_reports(
    report: dict[str, Any], spec: DatasetSpec, out: str | os.PathLike[str], *, samples: int = 8
) -> list[Path]:
    """Write ``inspect.txt``, ``inspect.json`` and ``inspect.png`` into ``out``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    txt, js, png = out / "inspect.txt", out / "inspect.json", out / "inspect.png"
    # file names that are not UTF-8 (surrogate escapes) are written as \xNN
    write_text_atomic(txt, printable(report_text(report)))
    write_text_atomic(js, json.dumps(report, indent=1) + "\n")
    picks: list[Sample] = []
    for split in report["splits"]:
        ss = [s for s in resolve_split(spec, split)[0] if s.mask is not None]
        if ss:
            step = max(1, len(ss) // samples)
            picks = ss[::step][:samples]
            break
    _figure(report, spec, png, picks)
    return [txt, js, png]
