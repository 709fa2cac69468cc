"""The ``pixelwise`` command. Parsing only: every command calls a function in ``engine`` or ``data``.

Errors print one line (``error: ...``) and exit with status 2; ``--debug`` anywhere on the command line
shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ._options import DeviceOption, inference_options
from .engine.inference import InferenceConfig
from .errors import first_line, printable
from .pretrained import DEFAULT_MODEL
from .video.temporal import DEFAULT_ALPHA

__all__ = ["app", "main"]

app = typer.Typer(
    name="pixelwise",
    help="Semantic segmentation: train, evaluate and predict per-pixel class maps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[default: all]" is text, not a markup tag
)
data_app = typer.Typer(help="Dataset tools.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)


# --model of every inference command: a file, or a bundled model's name (pixelwise.pretrained)
_ModelOption = Annotated[
    str,
    typer.Option(
        help="Checkpoint (.ckpt), exported model (.onnx), bundle (.json) or the name of a bundled "
        f"model; omitted: the bundled {DEFAULT_MODEL!r} model. An existing file wins over a name."
    ),
]


# the dataset argument and split option of the data commands
_DataArgument = Annotated[Path, typer.Argument(help="Dataset YAML or folder.")]


def _splits(verb: str) -> object:
    """The ``--split`` option of a data command (repeatable; all splits when omitted)."""
    return Annotated[list[str] | None, typer.Option(help=f"Split(s) to {verb} [default: all].")]


def _say(text: object, *, err: bool = False) -> None:
    """Print one message as plain text (no markup, no highlighting, no wrapping), with file names
    that are not UTF-8 shown as ``\\xNN`` (:func:`pixelwise.errors.printable`)."""
    (err_console if err else console).print(
        printable(text), highlight=False, markup=False, soft_wrap=True
    )


def _say_summary(text: str) -> None:
    """Print a report's summary lines; those starting ``problem:`` go to stderr."""
    for line in text.splitlines():
        _say(line, err=line.startswith("problem:"))


class _Failed(Exception):
    """Some inputs failed; already reported. Exit code 1."""


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _segmenter(model: str | Path, *, device: str, inference):  # noqa: ANN001, ANN202
    """The Segmenter of an inference command: ``model`` loaded, run as its options say."""
    from .engine import Segmenter

    return Segmenter.from_checkpoint(model, device=device, config=inference)


def _processes(device: str):  # noqa: ANN202 - (DistContext, str), imported lazily
    """Under torchrun, join the process group (left in :func:`main`) and return this process's
    context and device setting (its own GPU: ``cuda:LOCAL_RANK``); ranks other than 0 log warnings
    only. Without torchrun: a single process's context and ``device`` unchanged."""
    from .engine.distributed import init_distributed, local_device

    ctx = init_distributed(device)
    if not ctx.enabled:
        return ctx, device
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    return ctx, str(local_device(device, ctx))


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Recipe YAML (see configs/).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override: key.sub=value.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder [default: runs/<recipe name>].")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out exactly.")] = False,
    deterministic: Annotated[
        bool,
        typer.Option(
            help="Deterministic algorithms only: bit-identical reruns on CPU (train.deterministic)."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train a model from a recipe; writes best.ckpt, last.ckpt, metrics.csv, curves.png.
    Ctrl-C saves a resumable last.ckpt at the next step and exits with status 130."""
    from .config import load_config
    from .engine import train as run_train

    cfg = load_config(
        config, [*(set_ or []), *(["train.deterministic=true"] if deterministic else [])]
    )
    ctx, _ = _processes(cfg.train.device)  # torchrun: DistributedDataParallel
    out_dir = out or Path("runs") / config.stem
    from .engine.guard import TrainingInterrupted

    try:
        result = run_train(cfg, out_dir, resume=resume, progress=not quiet)
    except TrainingInterrupted as exc:  # Ctrl-C: saved where it stopped; say so in one line
        _say(str(exc), err=True)
        raise typer.Exit(130) from None
    if not ctx.is_main:
        return
    best = "—" if result.best_miou is None else f"{100 * result.best_miou:.2f}%"
    chosen = ""
    if result.monitor != "miou" and result.best_score is not None:
        chosen = f", chosen by {result.monitor} {100 * result.best_score:.2f}%"
    early = "; stopped early (train.early_stopping_patience)" if result.stopped_early else ""
    _say(
        f"trained {result.epochs_run} epoch(s), {result.steps} steps in {result.seconds:.0f}s; "
        f"best val mIoU {best} (epoch {result.best_epoch}{chosen}){early}; "
        f"outputs in {result.out_dir}"
    )


@app.command()
@inference_options
def evaluate(
    data: Annotated[Path, typer.Option(help="Dataset YAML or folder.")],
    model: _ModelOption = DEFAULT_MODEL,
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    out: Annotated[
        Path | None, typer.Option(help="JSON report path (+ _confusion.png beside).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 4,
    workers: Annotated[int, typer.Option(help="Data-loading processes.")] = 2,
    device: DeviceOption = "auto",
    inference: InferenceConfig | None = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Score a model on a labelled split: per-class IoU/Dice/accuracy and their means."""
    from .data import load_dataset_spec
    from .engine import evaluate as run_evaluate
    from .engine import report_dict, write_report

    ctx, device = _processes(device)  # torchrun: each process scores a share, matrices summed
    seg = _segmenter(model, device=device, inference=inference)
    spec = load_dataset_spec(data)
    if ctx.is_main:
        _say(f"dataset {spec.name}: {spec.num_classes} classes, from {spec.source}")
    result = run_evaluate(
        seg,
        spec,
        split,
        batch_size=batch_size,
        num_workers=workers,
        progress=not quiet and ctx.is_main,
    )
    if not ctx.is_main:
        return
    rep = report_dict(result)
    table = Table(title=f"{rep['dataset']} / {split}: {rep['num_images']} images")
    for col in ("class", "IoU %", "Dice %", "Acc %", "pixels"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in rep["per_class"]:
        table.add_row(
            c["name"],
            _pct(c["iou"]),
            _pct(c["dice"]),
            _pct(c["accuracy"]),
            f"{c['support']:,}" if c["present"] else "absent",
        )
    console.print(table)
    if note := seg.config.describe():
        _say(note)
    console.print(
        f"mIoU {_pct(rep['miou'])}  pixel acc {_pct(rep['pixel_accuracy'])}  "
        f"mean acc {_pct(rep['mean_accuracy'])}  fwIoU {_pct(rep['fw_iou'])}  "
        f"mean Dice {_pct(rep['mean_dice'])}"
    )
    if out is not None:
        png = write_report(result, out)
        console.print(f"report: {out}  confusion matrix: {png}")


@app.command()
@inference_options
def predict(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders or glob patterns; videos (.mp4 .avi .webm .mov .mkv, "
            "files or patterns) give <name>_overlay.mp4."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    model: _ModelOption = DEFAULT_MODEL,
    probs: Annotated[
        bool, typer.Option(help="Also write per-class probabilities (.npy, C×H×W).")
    ] = False,
    overlay: Annotated[bool, typer.Option(help="Write <name>_overlay.png with a legend.")] = True,
    regions: Annotated[
        bool,
        typer.Option(
            help="Also write <name>_regions.json: classes present (pixels, area) and their "
            "connected regions with bounding boxes."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Redo inputs whose mask exists (default: skip them).")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(help="Same-size images (or video frames) per forward pass.")
    ] = 4,
    workers: Annotated[int, typer.Option(help="Image-decoding processes.")] = 2,
    video_masks: Annotated[
        str,
        typer.Option(
            help="Videos: also write masks: none; png (<name>_masks/NNNNNN.png per frame, class "
            "indices with the palette); video (<name>_mask.mp4 in the class colours)."
        ),
    ] = "none",
    temporal: Annotated[
        str,
        typer.Option(
            help="Videos: stabilise labels over frames: none; ema (average the probabilities "
            "over time); flow (move the average along the optical flow first)."
        ),
    ] = "none",
    temporal_alpha: Annotated[
        float | None,
        typer.Option(
            help=f"Weight of the past frames for --temporal, in [0, 1) [default: {DEFAULT_ALPHA}].",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = "auto",
    inference: InferenceConfig | None = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Segment images: <name>.png class-index masks (class colours as palette) and overlays;
    TIFF inputs give <name>.tif (a GeoTIFF lined up with a georeferenced source). Videos give
    <name>_overlay.mp4 (same size and frame rate, legend inset) and --video-masks."""
    from .engine import predict_files
    from .video import is_video_path, parse_video_masks, temporal_stabilizer

    stabilizer = temporal_stabilizer(temporal, temporal_alpha)  # refused before the model loads
    masks = parse_video_masks(video_masks)
    ctx, device = _processes(device)  # torchrun: each process writes its share of the outputs
    seg = _segmenter(model, device=device, inference=inference)
    videos = [item for item in inputs if is_video_path(item)]
    inputs = [item for item in inputs if not is_video_path(item)]
    if videos and (probs or regions) and ctx.is_main:
        _say("note: --probs and --regions are written for images, not for videos", err=True)
    videos_failed = bool(videos) and _predict_videos(
        seg,
        videos,
        out,
        overlay=overlay,
        masks=masks,
        temporal=stabilizer,
        overwrite=overwrite,
        batch_size=batch_size,
        quiet=quiet,
        is_main=ctx.is_main,
    )
    if not inputs:
        if videos_failed:
            raise _Failed
        return
    summary = predict_files(
        seg,
        inputs,
        out,
        probs=probs,
        overlay=overlay,
        regions=regions,
        overwrite=overwrite,
        batch_size=batch_size,
        num_workers=workers,
        progress=not quiet and ctx.is_main,
    )
    if not ctx.is_main:
        return
    for path, reason in summary.failed:
        _say(f"skipped: {reason if path in reason else f'{path}: {reason}'}", err=True)
    note = seg.config.describe()
    skipped = (
        f", skipped {len(summary.skipped)} with a mask already (--overwrite redoes them)"
        if summary.skipped
        else ""
    )
    renamed = ""
    if summary.renamed:  # stems that clash: longer names (docs/inference.md)
        first = ", ".join(f"{Path(i).name} -> {Path(m).name}" for i, m in summary.renamed[:3])
        renamed = f", {len(summary.renamed)} named after more than their stem ({first})"
    _say(
        f"wrote {len(summary.written)} mask(s) to {out} "
        f"({summary.images_per_second:.2f} img/s){skipped}{renamed}; {len(summary.failed)} failed"
        + (f"\n{note}" if note else "")
    )
    if summary.failed or videos_failed:
        raise _Failed


def _predict_videos(  # Segmenter and TemporalEMA are imported lazily
    seg,  # noqa: ANN001
    videos: list[str],
    out: Path,
    *,
    overlay: bool,
    masks: str | None,
    temporal,  # noqa: ANN001
    overwrite: bool,
    batch_size: int,
    quiet: bool,
    is_main: bool,
) -> bool:
    """``predict``'s videos (:func:`pixelwise.video.predict_videos`): written, then reported by the
    main process. Returns whether any failed."""
    from .video import predict_videos

    summary = predict_videos(
        seg,
        videos,
        out,
        overlay=overlay,
        masks=masks,
        temporal=temporal,
        overwrite=overwrite,
        batch_size=batch_size,
        progress=not quiet and is_main,
    )
    if not is_main:
        return bool(summary.failed)
    for path, reason in summary.failed:
        _say(f"skipped: {reason if path in reason else f'{path}: {reason}'}", err=True)
    skipped = (
        f", skipped {len(summary.skipped)} with all outputs already (--overwrite redoes them)"
        if summary.skipped
        else ""
    )
    renamed = ", ".join(f"{Path(i).name} -> {n}" for i, n in summary.renamed[:3])
    renamed = (
        f", {len(summary.renamed)} named after more than their stem ({renamed})" if renamed else ""
    )
    _say(
        f"wrote {len(summary.written)} video(s) to {out}: {summary.frames} frames "
        f"({summary.frames_per_second:.2f} frames/s){skipped}{renamed}; {len(summary.failed)} failed"
        + (f"\n{temporal.describe()}" if temporal is not None else "")
    )
    return bool(summary.failed)


@app.command()
def export(
    model: Annotated[Path, typer.Option(help="Checkpoint (.ckpt) to export.")],
    out: Annotated[Path, typer.Option(help="Output file (.onnx).")],
    format: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    opset: Annotated[int | None, typer.Option(help="ONNX opset [default: the exporter's].")] = None,
    check: Annotated[
        bool, typer.Option(help="Run ONNX Runtime on two input sizes and compare with PyTorch.")
    ] = True,
) -> None:
    """Export a trained model (ONNX: dynamic batch, height and width; metadata embedded). The file
    then works as --model for predict and evaluate."""
    from .engine.export import export_checkpoint
    from .errors import PixelwiseError

    if format != "onnx":
        raise PixelwiseError(f"--format {format!r}: only onnx is supported")
    path = export_checkpoint(model, out, opset=opset)
    _say(f"exported {model} to {path}")
    if check:
        from .engine.export import check_onnx

        for size, diff in check_onnx(model, path):
            _say(f"ONNX Runtime vs PyTorch at {size[1]}×{size[0]}: max |Δ logit| {diff:.2e}")


@app.command()
def bundle(
    model: Annotated[Path, typer.Option(help="Checkpoint (.ckpt) to bundle (or a bundle).")],
    name: Annotated[str, typer.Option(help="Bundle name: letters, digits, '_' and '-'.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder [default: $PIXELWISE_PRETRAINED_DIR, else the package's "
            "pixelwise/pretrained/, where bundled models ship]."
        ),
    ] = None,
    dtype: Annotated[str, typer.Option(help="Weights as float16 (half the size) or float32.")] = (
        "float16"
    ),
    input_size: Annotated[
        tuple[int, int], typer.Option(help="H W the model was trained and evaluated at.")
    ] = (360, 480),
    extra: Annotated[
        list[str] | None,
        typer.Option(
            help="Free information key=value (value read as JSON when it parses), e.g. "
            "test_miou=0.4314 licence=Apache-2.0; repeatable."
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="Compare the bundle's logits with the checkpoint's.")
    ] = True,
    amp: Annotated[
        str,
        typer.Option(
            help="Record a reduced precision (bf16) the bundle then predicts under by default "
            "where the hardware runs it natively; needs --check-data: refused when it scores "
            "more than 0.1 mIoU point below float32 there."
        ),
    ] = "off",
    check_data: Annotated[
        Path | None, typer.Option(help="Dataset YAML or folder to check --amp on.")
    ] = None,
    check_split: Annotated[str, typer.Option(help="The split --amp is checked on.")] = "test",
    workers: Annotated[int, typer.Option(help="Data-loading processes for --check-data.")] = 2,
) -> None:
    """Write a model bundle: NAME.safetensors (weights) + NAME.json (classes, normalisation, input
    size, provenance). A bundle in pixelwise/pretrained/ is loaded by name: --model NAME."""
    from .engine import Segmenter
    from .engine.bundle import INFERENCE_AMPS, record_inference, write_bundle
    from .engine.checks import compare_models
    from .engine.evaluate import check_amp
    from .engine.loading import load_model
    from .errors import PixelwiseError
    from .pretrained import pretrained_dir

    if amp != "off" and amp not in INFERENCE_AMPS:
        raise PixelwiseError(f"--amp {amp!r}: a bundle records off or {', '.join(INFERENCE_AMPS)}")
    if amp != "off" and check_data is None:
        raise PixelwiseError(
            f"--amp {amp} needs --check-data DATA: the split it is checked to score like float32 on"
        )

    info: dict = {}
    for item in extra or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PixelwiseError(f"--extra {item!r}: expected key=value")
        try:
            info[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            info[key.strip()] = value
    source = load_model(model)
    reference, meta = source.model, source.meta
    path = write_bundle(
        source,
        out or pretrained_dir(),
        name,
        dtype=dtype,
        input_size=input_size,
        extra=info,
    )
    written = load_model(path)
    desc = written.info or {}
    if amp != "off":
        from .data import load_dataset_spec

        spec = load_dataset_spec(check_data)  # type: ignore[arg-type]
        seg = Segmenter(written, config=InferenceConfig(amp="off"))
        checked = check_amp(seg, amp, spec, check_split, num_workers=workers)
        record_inference(path, {"amp": amp, "check": checked})
        _say(
            f"{amp} checked on {checked['data']}/{checked['split']} ({checked['images']} images): "
            f"mIoU {100 * checked['miou_amp']:.2f} against {100 * checked['miou_float32']:.2f} "
            f"in float32; recorded as the bundle's inference precision"
        )
    weights = Path(desc["weights_path"])
    _say(
        f"bundled {model} as {name!r}: {path} + {weights.name} "
        f"({weights.stat().st_size / 2**20:.1f} MiB, {dtype}, {desc['parameters']:,} parameters, "
        f"{meta.arch}, {meta.num_classes} classes, trained at {input_size[0]}×{input_size[1]})"
    )
    if check:
        diff, agree = compare_models(reference, written.model, meta, input_size)
        _say(
            f"bundle vs source on a random {input_size[0]}×{input_size[1]} input: "
            f"max |Δ logit| {diff:.2e}, labels agree on {100 * agree:.3f}% of pixels"
        )


@app.command()
def demo(
    images: Annotated[
        list[str] | None,
        typer.Argument(help="More images to segment (files, folders or glob patterns)."),
    ] = None,
    model: _ModelOption = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("pixelwise-demo"),
    data: Annotated[
        Path | None,
        typer.Option(
            help="Also score this labelled dataset (YAML or folder) [default: the model's dataset "
            "when ../shared/data/<dataset> and configs/data/<dataset>.yaml are found]."
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to score [default: test, else val, else all].")
    ] = None,
    eval_: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Score a labelled dataset when one is found.")
    ] = True,
    samples: Annotated[
        bool,
        typer.Option(
            help="Segment the demo's samples too: photos shipped by installed packages and, for a "
            "road-scene model, generated road scenes and clips (--no-samples: only IMAGES)."
        ),
    ] = True,
    workers: Annotated[int, typer.Option(help="Data-loading processes for the scoring.")] = 2,
    clips: Annotated[
        bool,
        typer.Option(
            help="For a road-scene model: also segment a generated drive and, when CamVid's test "
            "frames are found, a clip of them (needs PyAV: pip install 'pixelwise[video]')."
        ),
    ] = True,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Try a model with nothing but the install: segment sample photos (and IMAGES), write masks,
    overlays and contact_sheet.png, print each image's class areas; score a labelled dataset when
    one is given or found. A road-scene model (CamVid's classes) also gets generated street scenes,
    scored on their exact labels, and segmented clips."""
    from .engine.demo import (
        camvid_clip_frames,
        domain_note,
        evaluate_demo,
        format_area,
        is_road_model,
        load_demo_model,
        plan_evaluation,
        segment_demo,
    )

    seg, info = load_demo_model(model, device=device)
    meta = seg.meta
    size = tuple(info["input_size"]) if info else None
    what = f"{info['dtype']} bundle, trained at {size[0]}×{size[1]}" if info and size else "model"
    _say(
        f"model {model}: {meta.arch}, {meta.num_classes} classes"
        + (f" ({meta.dataset})" if meta.dataset else "")
        + f", {what}"
    )
    plan = plan_evaluation(seg, data=data, split=split, enabled=eval_)
    road = is_road_model(meta)  # the clips are road scenes: other models get none
    clips = clips and samples
    frames, no_frames = camvid_clip_frames() if clips and road else ([], "")
    result = segment_demo(
        seg,
        images or [],
        out,
        samples=samples,
        max_size=size,
        road_scenes=None if samples else 0,
        clips=clips and road,
        clip_frames=frames,
        progress=not quiet,
    )
    for item in result.images:
        areas = ", ".join(f"{n} {format_area(f)}" for n, f in item.areas)
        tag = ", synthetic" if item.synthetic else ""
        _say(f"{item.source.name} ({item.size[1]}×{item.size[0]}{tag}): {areas}")
    for path, reason in result.failed:
        _say(f"skipped: {reason if path in reason else f'{path}: {reason}'}", err=True)
    sheet = f", {result.sheet.name}" if result.sheet else ""
    _say(f"wrote {len(result.images)} mask(s) and overlay(s){sheet} and summary.json to {out}")
    for line in domain_note(result):
        _say(line)
    if (sc := result.scenes) is not None:
        ious = ", ".join(f"{n} {_pct(v)}" for n, v in sc.iou.items() if v is not None)
        _say(
            f"generated road scenes ({sc.images}, synthetic, exact labels; not a CamVid score): "
            f"mIoU {_pct(sc.miou)}%  pixel acc {_pct(sc.pixel_accuracy)}%  IoU: {ious}"
        )
    for clip in result.clips:
        _say(f"wrote {clip.overlay.name}: {clip.note}")
    if result.clips_note:
        _say(result.clips_note)
    elif clips and road and not frames and no_frames:
        _say(f"no CamVid clip: {no_frames}")
    if plan.spec is None:
        _say(plan.note)
    else:
        _say(f"scoring {plan.note}")
        ev = evaluate_demo(seg, plan, out, num_workers=workers, progress=not quiet)
        if ev is not None:
            s = ev.scores
            _say(
                f"{ev.dataset} / {ev.split} ({ev.num_images} images): mIoU {_pct(s.miou)}%  "
                f"pixel acc {_pct(s.pixel_accuracy)}%  mean acc {_pct(s.mean_accuracy)}%  "
                f"(report: {out / 'evaluation.json'})"
            )
    if result.failed:
        raise _Failed


@data_app.command("validate")
def data_validate(
    data: _DataArgument,
    split: _splits("check") = None,
    decode_images: Annotated[
        bool,
        typer.Option(
            "--decode-images/--headers",
            help="Decode every image as training does, or (default) read PNG/JPEG sizes from their "
            "headers after checking the file is whole. Masks are always decoded.",
        ),
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Reader threads [default: cores + 2, at most 8].")
    ] = None,
) -> None:
    """Check every image and mask of a dataset; list every problem; non-zero exit on any."""
    import time

    from .data import check_split, load_dataset_spec

    spec = load_dataset_spec(data)
    _say(f"dataset {spec.name}: {spec.num_classes} classes, from {spec.source}")
    for note in spec.notes:
        _say(f"note: {note}")
    problems = 0
    for name in split or list(spec.splits):
        t0 = time.perf_counter()
        rep = check_split(spec, name, workers=workers, decode_images=decode_images)
        seconds = time.perf_counter() - t0
        problems += len(rep.problems)
        for p in rep.problems:
            _say(f"problem: {p}", err=True)
        for note in rep.notes:
            _say(f"note: {note}", err=True)
        status = "ok" if rep.ok else f"{len(rep.problems)} problem(s)"
        console.print(f"split {name}: {rep.num_images} images, {status} ({seconds:.1f} s)")
    if problems:
        raise _Failed


@data_app.command("inspect")
def data_inspect(
    data: _DataArgument,
    split: _splits("inspect") = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for inspect.txt, inspect.json and inspect.png [default: none]."),
    ] = None,
    samples: Annotated[int, typer.Option(help="Sample overlays in the figure.")] = 8,
    workers: Annotated[
        int | None, typer.Option(help="Reader threads [default: cores + 2, at most 8].")
    ] = None,
) -> None:
    """Counts, sizes, class frequencies and presence, empty masks, mask values found vs declared and
    images shared between splits; as text, and with --out as JSON and a PNG figure. Exit 1 when a
    file is unreadable or a mask holds undeclared values."""
    from .data import load_dataset_spec
    from .data.inspect import inspect_dataset, report_text, write_reports

    spec = load_dataset_spec(data)
    report = inspect_dataset(spec, split, workers=workers)
    for line in report_text(report).splitlines():
        _say(line)
    if out is not None:
        for path in write_reports(report, spec, out, samples=samples):
            _say(f"wrote {path}")
    if any(r["problems"] for r in report["splits"].values()):
        raise _Failed


@data_app.command("convert")
def data_convert(
    data: Annotated[Path, typer.Argument(help="Dataset YAML or folder (any supported format).")],
    out: Annotated[Path, typer.Option(help="A new folder for the converted dataset.")],
    to: Annotated[
        str, typer.Option(help="Masks written: index (grey), palette (indexed colour) or rgb.")
    ] = "index",
    split: _splits("convert") = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Remap raw mask values before decoding, OLD:NEW (e.g. 255:1); repeat or "
            "comma-separate.",
        ),
    ] = None,
    ignore_color: Annotated[
        str, typer.Option(help="R,G,B of unlabelled pixels in rgb masks.")
    ] = "0,0,0",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and count everything; write nothing.")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Reader threads.")] = None,
) -> None:
    """Rewrite masks in another encoding (colour ↔ index, polygons → masks, remapped values) into a
    new folder with list files and a dataset.yaml; never over the source."""
    from .data import load_dataset_spec
    from .data.convert import convert_dataset, parse_value_map
    from .errors import PixelwiseError

    try:
        rgb = tuple(int(v) for v in ignore_color.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise PixelwiseError(f"--ignore-color {ignore_color!r}: expected R,G,B in 0..255")
    spec = load_dataset_spec(data)
    plan = convert_dataset(
        spec,
        out,
        splits=split,
        to=to,  # type: ignore[arg-type]
        value_map=parse_value_map(map_ or []),
        ignore_color=rgb,  # type: ignore[arg-type]
        dry_run=dry_run,
        workers=workers,
    )
    _say_summary(plan.summary(spec))
    if plan.problems:
        if not dry_run:
            _say(f"nothing written to {out}", err=True)
        raise _Failed


@data_app.command("split")
def data_split(
    data: _DataArgument,
    out: Annotated[Path, typer.Option(help="Folder for <split>.txt list files and dataset.yaml.")],
    source: Annotated[
        str, typer.Option("--from", help="The split whose samples are divided.")
    ] = "all",
    names: Annotated[
        str, typer.Option(help="New split names, comma-separated.")
    ] = "train,val,test",
    ratios: Annotated[str, typer.Option(help="Their ratios, comma-separated.")] = "0.7,0.15,0.15",
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same splits.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Reader threads.")] = None,
) -> None:
    """Split a dataset by ratio, stratified by class presence (iterative stratification),
    reproducibly by seed; writes list files and a dataset.yaml using them."""
    from .data import load_dataset_spec
    from .data.split import parse_ratios, split_dataset

    spec = load_dataset_spec(data)
    split_names = [n.strip() for n in names.split(",") if n.strip()]
    summary = split_dataset(
        spec,
        out,
        source=source,
        names=split_names,
        ratios=parse_ratios(ratios, split_names),
        seed=seed,
        workers=workers,
    )
    table = Table(title=f"{spec.name} / {source} → {', '.join(split_names)} (seed {seed})")
    table.add_column("class")
    for n in split_names:
        table.add_column(f"{n} ({summary['splits'][n]['groups']})", justify="right")
    for c in spec.class_names:
        table.add_row(c, *(str(summary["splits"][n]["class_presence"][c]) for n in split_names))
    console.print(table)
    _say(f"wrote {out}/{{{','.join(split_names)}}}.txt and {out}/dataset.yaml")


@data_app.command("weights")
def data_weights(
    data: _DataArgument,
    split: Annotated[str, typer.Option(help="Split whose pixels are counted.")] = "train",
    beta: Annotated[
        float, typer.Option(help="effective_number's beta (close to 1 for pixel counts).")
    ] = 0.9999,
) -> None:
    """Class weights from a split's pixel counts: inverse frequency, median frequency, effective
    number. A recipe asks for one by name: loss: {class_weights: median_frequency}."""
    from .data import check_split, load_dataset_spec
    from .losses import WEIGHT_SCHEMES, class_weights

    spec = load_dataset_spec(data)
    rep = check_split(spec, split)
    for p in rep.problems:
        _say(f"problem: {p}", err=True)
    weights = {
        s: class_weights(s, rep.class_pixels, image_pixels=rep.class_image_pixels, beta=beta)
        for s in WEIGHT_SCHEMES
    }
    total = max(1, int(rep.class_pixels.sum()))
    table = Table(
        title=f"{spec.name} / {split}: {rep.num_images} images, {total:,} labelled pixels"
    )
    for col in ("class", "pixels", "%", "inverse freq.", "median freq.", "effective n."):
        table.add_column(col, justify="left" if col == "class" else "right")
    for i, name in enumerate(spec.class_names):
        n = int(rep.class_pixels[i])
        table.add_row(
            name,
            f"{n:,}",
            f"{100 * n / total:.2f}",
            *(f"{weights[s][i]:.4f}" for s in WEIGHT_SCHEMES),
        )
    console.print(table)
    for s in WEIGHT_SCHEMES:
        _say(f"{s}: [{', '.join(f'{w:.4f}' for w in weights[s])}]")
    if rep.problems:
        raise _Failed


@data_app.command("export-labels")
def data_export_labels(
    data: _DataArgument,
    to: Annotated[str, typer.Option(help="File format: coco, cvat or labelstudio.")],
    out: Annotated[Path, typer.Option(help="The file written (COCO/Label Studio JSON, CVAT XML).")],
    split: _splits("export") = None,
    skip: Annotated[
        list[str] | None,
        typer.Option(help="A class given no regions (e.g. background); repeatable."),
    ] = None,
    image_prefix: Annotated[
        str | None,
        typer.Option(
            help="Label Studio: data.image is this + the image's path relative to the dataset "
            "root [default: /data/local-files/?d=, local-files storage rooted at the dataset]."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --out if it exists.")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Reader threads.")] = None,
) -> None:
    """Write a dataset's masks as a COCO JSON (compressed RLE), CVAT for images 1.1 XML or Label
    Studio JSON (brush RLE), one region per class per image; unlabelled pixels get none."""
    from .data import load_dataset_spec
    from .data.interop import export_classes, export_labels, labelstudio_config

    spec = load_dataset_spec(data)
    report = export_labels(
        spec,
        out,
        to=to,
        splits=split,
        skip=skip or (),
        overwrite=overwrite,
        **({} if image_prefix is None else {"image_prefix": image_prefix}),
        workers=workers,
    )
    _say_summary(report.summary())
    if report.problems:
        raise _Failed
    if report.to == "labelstudio":
        _say("labeling config of the Label Studio project (Settings > Labeling Interface > Code):")
        _say(labelstudio_config(export_classes(spec, skip or ())).rstrip())


@data_app.command("import-labels")
def data_import_labels(
    file: Annotated[
        Path, typer.Argument(help="A COCO JSON, CVAT for images XML or Label Studio JSON.")
    ],
    data: Annotated[Path, typer.Option(help="Dataset YAML or folder whose images it labels.")],
    out: Annotated[
        Path, typer.Option(help="A new folder for the masks, in the dataset's own encoding.")
    ],
    from_: Annotated[
        str | None,
        typer.Option("--from", help="coco, cvat or labelstudio [default: from the content]."),
    ] = None,
    split: _splits("match images against") = None,
    unlabelled: Annotated[
        str | None,
        typer.Option(help="A class for pixels no region covers [default: unlabelled]."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --out as a whole if it is not empty.")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Writer threads.")] = None,
) -> None:
    """Write the masks a COCO, CVAT or Label Studio file gives, matched to the dataset's images by
    file name, into a new folder in the dataset's own mask encoding; nothing on any problem."""
    from .data import load_dataset_spec
    from .data.interop import import_labels

    spec = load_dataset_spec(data)
    report = import_labels(
        file,
        spec,
        out,
        fmt=from_,
        splits=split,
        unlabelled=unlabelled,
        overwrite=overwrite,
        workers=workers,
    )
    _say_summary(report.summary())
    if report.problems:
        raise _Failed


@app.command("models")
def models_cmd(
    encoder: Annotated[
        str | None, typer.Option(help="Build every architecture on this encoder instead.")
    ] = None,
    size: Annotated[int, typer.Option(help="Square input size for the FLOP count.")] = 512,
    encoders: Annotated[bool, typer.Option(help="Also list the encoders.")] = True,
) -> None:
    """List architectures and encoders with parameters and GFLOPs, measured at --size (11 classes)."""
    from .encoders import list_encoders
    from .encoders.weights import imagenet_status
    from .engine.complexity import default_encoder, encoder_complexity, model_complexity
    from .errors import PixelwiseError
    from .registry import list_models

    if size < 1:
        raise PixelwiseError(f"--size must be a positive number of pixels, got {size}")
    table = Table(title=f"architectures: parameters and GFLOPs at {size}×{size}, 11 classes")
    for col in ("name", "encoder", "output stride", "parameters (M)", "GFLOPs"):
        table.add_column(col, justify="left" if col in ("name", "encoder") else "right")
    for name in list_models():
        enc = default_encoder(name)
        if encoder is not None and enc is None:
            continue
        kwargs = {} if encoder is None else {"encoder": encoder}
        c = model_complexity(name, size=size, **kwargs)
        table.add_row(
            name,
            encoder or enc or "(its own)",
            str(c.output_stride),
            f"{c.params / 1e6:.2f}",
            f"{c.gflops:.1f}",
        )
    console.print(table)
    if not encoders or encoder is not None:
        return
    table = Table(
        title=f"encoders alone: output stride 32, {size}×{size}",
        caption="encoder_weights='imagenet' loads local files only; any encoder takes a weights file",
    )
    for col in ("encoder", "deepest channels", "parameters (M)", "GFLOPs", "ImageNet weights here"):
        right = col in ("deepest channels", "parameters (M)", "GFLOPs")
        table.add_column(col, justify="right" if right else "left", no_wrap=col == "encoder")
    for name in list_encoders():
        c = encoder_complexity(name, size=size, output_stride=32)
        table.add_row(
            name,
            str(c.channels[-1]),
            f"{c.params / 1e6:.2f}",
            f"{c.gflops:.1f}",
            imagenet_status(name),
        )
    console.print(table)


@app.command()
def auto(
    data: _DataArgument,
    time: Annotated[
        str, typer.Option("--time", help="Budget for the whole run: 90s, 30m, 2h or seconds.")
    ],
    out: Annotated[
        Path, typer.Option(help="Output folder; re-running continues where it stopped.")
    ],
    device: DeviceOption = "auto",
    measure: Annotated[
        bool, typer.Option(help="Time 3 training steps and re-plan with the measured step time.")
    ] = True,
    name: Annotated[
        str | None, typer.Option(help="Bundle name [default: the dataset's name].")
    ] = None,
    max_epochs: Annotated[
        int | None, typer.Option(help="At most this many epochs, whatever fits (smoke runs).")
    ] = None,
    search: Annotated[
        bool,
        typer.Option(
            help="Before training, compare candidate recipes on the val split for 40% of the "
            "budget, stopping weak ones early; train the best (needs pixelwise[auto])."
        ),
    ] = False,
    trials: Annotated[
        int | None, typer.Option(help="Candidates to try with --search, 2 to 6 [default: 4].")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Fingerprint a dataset, plan a recipe for the time budget, (search,) train, evaluate, bundle
    and write report.md into --out; each step is skipped when its result is there (docs/auto.md)."""
    from .auto.run import parse_duration, run_auto

    result = run_auto(
        data,
        out,
        budget_seconds=parse_duration(time),
        device=device,
        measure=measure,
        progress=not quiet,
        bundle_name=name,
        max_epochs=max_epochs,
        search=search,
        trials=trials,
        say=_say,
    )
    _say(f"predict with: pixelwise predict IMAGES --out OUT --model {result.bundle}")
    _say(f"read the report: {result.report}")


from .annotate.cli import annotate_command  # noqa: E402
from .serve.cli import serve_command  # noqa: E402

app.command("serve")(serve_command)
app.command("annotate")(annotate_command)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        console.print(f"pixelwise {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """pixelwise: semantic segmentation toolkit."""


def _leave_processes() -> None:
    """Leave the process group a torchrun command joined (:func:`_processes`), if any."""
    dist = sys.modules.get("torch.distributed")  # never import torch to find nothing to close
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning exceptions into one line unless ``--debug`` is given."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        try:
            code = app(args=args, prog_name="pixelwise", standalone_mode=False)
        finally:
            _leave_processes()
    except _Failed:
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - every error becomes one line
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        if debug:
            raise
        msg = first_line(exc)
        from .errors import PixelwiseError

        if not isinstance(exc, PixelwiseError):
            msg = f"{type(exc).__name__}: {msg} (run with --debug for the traceback)"
        _say(f"error: {msg}", err=True)
        sys.exit(2)
    if isinstance(code, int) and code:  # typer.Exit(N), and Ctrl-C, which typer turns into 130
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
