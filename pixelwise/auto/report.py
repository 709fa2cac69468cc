"""The ``pixelwise auto`` report: ``report.md`` with the fingerprint, the plan and its reasons, the
search's trials (``--search``), the training curves, the per-class scores, the confusion matrix and
sample overlays (``samples/``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from .._atomic import atomic_path, write_text_atomic
from ..data.spec import DatasetSpec, resolve_split
from .fingerprint import Fingerprint

__all__ = ["SAMPLES", "write_auto_report", "report_markdown"]

SAMPLES = 4  # overlays in the report


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _fingerprint_table(fp: Fingerprint) -> list[str]:
    splits = ", ".join(f"{k} {v['labelled']}/{v['images']}" for k, v in fp.splits.items())
    h, w = fp.median_size
    rare = min(range(fp.num_classes), key=lambda c: fp.class_frequency[c])
    rows = [
        ("dataset", f"{fp.name} ({fp.dataset})"),
        ("classes", f"{fp.num_classes}: {', '.join(fp.class_names)}"),
        ("splits (labelled/images)", splits),
        ("sampled", f"{fp.sampled} of {fp.sample_of} labelled images"),
        ("median size (HxW)", f"{h:g}x{w:g}"),
        ("channels", f"{fp.image_channels}" + (" (gray stored as RGB)" if fp.gray_as_rgb else "")),
        (
            "rarest class",
            f"{fp.class_names[rare]}: {100 * fp.class_frequency[rare]:.2f}% of pixels",
        ),
        ("unlabelled pixels", f"{100 * fp.ignored_fraction:.2f}%"),
    ]
    return ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)]


def _class_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| class | IoU % | Dice % | accuracy % | pixels |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for c in doc.get("per_class", []):
        support = f"{c['support']:,}" if c.get("present") else "absent"
        lines.append(
            f"| {c['name']} | {_pct(c['iou'])} | {_pct(c['dice'])} | {_pct(c['accuracy'])} "
            f"| {support} |"
        )
    lines.append(
        f"| **mean** | {_pct(doc.get('miou'))} | {_pct(doc.get('mean_dice'))} "
        f"| {_pct(doc.get('mean_accuracy'))} | pixel accuracy {_pct(doc.get('pixel_accuracy'))} |"
    )
    return lines


def _search_section(search: dict[str, Any]) -> list[str]:
    """The search's trials as a table, its rule and the winner."""
    lines = [
        "## Search",
        "",
        f"{len(search.get('trials', []))} trial(s) of {search.get('trial_seconds', 0):.0f} s each "
        f"(`search.json`, the trials' runs in `search/`); pruner: {search.get('pruner')}.",
        "",
        "| trial | candidate | what | state | val mIoU % per validation (epoch) | best % | seconds |",
        "| ---: | --- | --- | --- | --- | ---: | ---: |",
    ]
    for t in search.get("trials", []):
        scores = ", ".join(f"{_pct(v['val_miou'])} ({v['epoch']})" for v in t.get("val_miou", []))
        lines.append(
            f"| {t['number'] + 1} | `{t['candidate']}` | {t['description']} | {t['state']} "
            f"| {scores or '—'} | {_pct(t.get('best_val_miou'))} | {t.get('seconds', 0):.0f} |"
        )
    if search.get("not_tried"):
        lines += ["", f"Not tried (the search's time was used): {', '.join(search['not_tried'])}."]
    lines += ["", f"Chosen: `{search.get('winner')}`; rule: {search.get('rule')}.", ""]
    return lines


def report_markdown(
    fp: Fingerprint,
    plan_doc: dict[str, Any],
    evaluation: dict[str, Any],
    *,
    curves: str | None,
    confusion: str | None,
    samples: list[str],
    search: dict[str, Any] | None = None,
) -> str:
    """The report's Markdown; image arguments are paths relative to the report. ``search``:
    ``search.json``'s content, when the run searched."""
    est = plan_doc.get("estimates", {})
    recipe = plan_doc.get("recipe", {})
    model = recipe.get("model", {})
    lines = [f"# pixelwise auto: {fp.name}", "", "## Dataset fingerprint", ""]
    lines += [*_fingerprint_table(fp), "", "Full numbers: `fingerprint.json`.", "", "## Plan", ""]
    lines.append(
        f"`recipe.yaml` (train it again with `pixelwise train recipe.yaml`): {model.get('name')}, "
        f"{est.get('epochs')} epoch(s) of {est.get('steps_per_epoch')} step(s), "
        f"{est.get('step_seconds', 0):.3g} s per step "
        f"({'measured' if est.get('measured') else 'estimated'}), "
        f"budget {est.get('budget_seconds', 0):.0f} s."
    )
    lines += ["", *(f"- {r}" for r in plan_doc.get("reasons", [])), ""]
    lines += [*(_search_section(search) if search else []), "## Training", ""]
    lines.append(f"![training curves]({curves})" if curves else "No training curves were written.")
    lines += ["", "## Evaluation", ""]
    if evaluation.get("split") is None:
        lines.append(evaluation.get("note", "Not evaluated."))
    else:
        lines.append(f"Split `{evaluation['split']}`, {evaluation.get('num_images')} image(s).")
        if evaluation.get("note"):
            lines.append(f"Note: {evaluation['note']}.")
        lines += ["", *_class_table(evaluation)]
        if confusion:
            lines += ["", f"![confusion matrix]({confusion})"]
    lines += ["", "## Samples", ""]
    lines += [f"![{Path(s).stem}]({s})" for s in samples] or ["No samples."]
    return "\n".join(lines) + "\n"


def _samples(out: Path, spec: DatasetSpec, split: str, best: Path, device: str) -> list[str]:
    """Overlays of the predictions on up to :data:`SAMPLES` images of ``split``, as PNGs in
    ``out/samples``; their paths relative to ``out``."""
    from ..data.formats import read_sample_image
    from ..data.survey import spread
    from ..engine.loading import load_model
    from ..engine.predictor import Segmenter
    from ..engine.visualize import overlay_with_legend

    found, _ = resolve_split(spec, split)
    if not found:
        return []
    seg = Segmenter(load_model(best), device=device)
    names = []
    for i, sample in enumerate(spread(found, SAMPLES)):
        image = read_sample_image(sample, spec)
        labels = seg.segment(image).labels
        pic = overlay_with_legend(image, labels, seg.colors, seg.class_names)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", sample.image.stem)
        rel = f"samples/{i}_{stem}.png"
        with atomic_path(out / rel) as tmp:
            pic.save(tmp, format="PNG")
        names.append(rel)
    return names


def write_auto_report(
    out: Path,
    spec: DatasetSpec,
    fp: Fingerprint,
    plan_doc: dict[str, Any],
    evaluation: dict[str, Any],
    best: Path,
    *,
    device: str = "auto",
    search: dict[str, Any] | None = None,
) -> tuple[Path, bool]:
    """Write ``out/report.md`` (with ``curves.png`` and ``samples/``) unless it exists; return its
    path and whether it was written now. ``search``: ``search.json``'s content, if any."""
    path = out / "report.md"
    if path.exists():
        return path, False
    curves = None
    if (out / "train" / "curves.png").exists():
        with atomic_path(out / "curves.png") as tmp:
            shutil.copyfile(out / "train" / "curves.png", tmp)
        curves = "curves.png"
    confusion = "evaluation_confusion.png" if (out / "evaluation_confusion.png").exists() else None
    split = evaluation.get("split") or fp.fingerprinted_splits[0]
    samples = _samples(out, spec, split, best, device)
    text = report_markdown(
        fp, plan_doc, evaluation, curves=curves, confusion=confusion, samples=samples, search=search
    )
    write_text_atomic(path, text)
    return path, True
