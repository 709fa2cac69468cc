"""Segmenting videos: frames in, labels and segmented videos out, through the one prediction path.

:func:`segment_video` yields each frame's labels lazily: frames are decoded ahead in a thread
(:class:`~pixelwise.video.io.VideoReader`), grouped in batches of ``batch_size`` and predicted by
:meth:`Segmenter.segment_batch <pixelwise.engine.predictor.Segmenter.segment_batch>` (so
:meth:`~pixelwise.engine.predictor.Segmenter.logits`: tiling, TTA, precision and the CRF as
configured), optionally stabilised over time (:mod:`pixelwise.video.temporal`).

:func:`write_segmented_video` writes one video's outputs; :func:`predict_videos` many, as
``pixelwise predict`` does for videos. Outputs of a video named ``<name>``:

- ``<name>_overlay.mp4``: the frames blended with the class colours, the legend inset at the top
  left (:func:`~pixelwise.engine.visualize.overlay_with_inset_legend`);
- ``<name>_masks/NNNNNN.png`` (``masks="png"``): each frame's class indices, the class colours as
  palette, as ``predict`` writes an image's mask; numbered from 000000;
- ``<name>_mask.mp4`` (``masks="video"``): the class colours as a video (lossy: for viewing; the
  PNG masks are exact).

Every output is written to a temporary file (or folder) in the output folder and renamed when the
whole video is done, so an interrupted run never leaves a partial output: a re-run starts the video
again (a video is skipped only when all its outputs exist) and removes the temporary files that a
killed run left.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import outputs
from .._atomic import atomic_folder, atomic_path
from ..engine.checkpoint import ModelMeta
from ..engine.distributed import current_context, shard
from ..engine.guard import remove_stale_temp_files, terminate_as_interrupt
from ..engine.predict import expand_inputs, gathered, output_names
from ..engine.predictor import Segmenter
from ..engine.visualize import mask_image, overlay_with_inset_legend
from ..errors import PixelwiseError, first_line
from .io import VideoInfo, VideoReader, VideoWriter, open_video, require_av
from .temporal import TemporalEMA

__all__ = [
    "MASK_OUTPUTS",
    "VideoFrame",
    "VideoResult",
    "VideoSummary",
    "parse_video_masks",
    "predict_videos",
    "segment_video",
    "write_segmented_video",
]


@dataclass
class VideoFrame:
    """One frame's prediction: its ``index`` (from 0), the decoded ``image`` (H×W×C uint8), its
    ``labels`` (H×W uint8 class indices) and, when asked for, ``probs`` (K×H×W float32; the
    stabilised ones with a temporal stabiliser)."""

    index: int
    image: np.ndarray
    labels: np.ndarray
    probs: np.ndarray | None = None


def segment_video(
    segmenter: Segmenter,
    source: str | os.PathLike[str] | VideoReader,
    *,
    batch_size: int = 4,
    temporal: TemporalEMA | None = None,
    probs: bool = False,
) -> Iterator[VideoFrame]:
    """Each frame of a video with its labels, lazily: only the frames of the batch being predicted
    and those decoded ahead (:data:`~pixelwise.video.io.DEFAULT_PREFETCH`) are held, and closing
    the iterator early stops decoding.

    Args:
        segmenter: the model and how to run it.
        source: a video file, or a :class:`VideoReader` not yet read (closed when done).
        batch_size: frames per forward pass.
        temporal: a stabiliser (:class:`~pixelwise.video.temporal.TemporalEMA`,
            :class:`~pixelwise.video.temporal.TemporalFlow`); reset at the first frame. The labels
            then come from its averaged probabilities.
        probs: also give each frame's class probabilities.

    Raises:
        PixelwiseError: one line: the file is not a readable video, its frames are too large or
            too thin for the model, a frame cannot be decoded.
    """
    if batch_size < 1:
        raise PixelwiseError(f"batch_size must be >= 1, got {batch_size}")
    reader = source if isinstance(source, VideoReader) else None
    if reader is None:
        reader = open_video(source, channels=segmenter.meta.in_channels)
    with reader:
        segmenter.check_shape(reader.info.height, reader.info.width)
        if temporal is not None:
            temporal.reset()
        threshold = segmenter.meta.threshold if segmenter.meta.output == "sigmoid" else None
        frames = iter(reader)
        index = 0
        while batch := list(itertools.islice(frames, batch_size)):
            preds = segmenter.segment_batch(batch, probs=probs or temporal is not None)
            for image, pred in zip(batch, preds, strict=True):
                labels, p = pred.labels, pred.probs
                if temporal is not None:
                    p = temporal(p, image)  # type: ignore[arg-type]
                    averaged = torch.from_numpy(p[None])
                    labels = outputs.labels_from_probabilities(averaged, threshold)[0]
                    labels = labels.to(torch.uint8).numpy()
                yield VideoFrame(index, image, labels, p if probs else None)
                index += 1


# ---- outputs -------------------------------------------------------------------------------------


class _VideoOutput:
    """An output video written while frames come (to a temporary file, renamed on success)."""

    suffix = ""

    def __init__(
        self, stack: contextlib.ExitStack, target: Path, info: VideoInfo, meta: ModelMeta
    ) -> None:
        tmp = stack.enter_context(atomic_path(target))
        self.writer = VideoWriter(tmp, info.fps, info.width, info.height)
        stack.callback(self.writer.abort)  # on failure: closed before the temporary file goes
        self.meta = meta

    def picture(self, frame: VideoFrame) -> np.ndarray:
        raise NotImplementedError

    def add(self, frame: VideoFrame) -> None:
        self.writer.write(self.picture(frame))

    def finish(self) -> None:
        self.writer.close()


class OverlayVideo(_VideoOutput):
    """``<name>_overlay.mp4``: the frames blended with the class colours, legend inset."""

    suffix = "_overlay.mp4"

    def picture(self, frame: VideoFrame) -> np.ndarray:
        m = self.meta
        return overlay_with_inset_legend(frame.image, frame.labels, m.colors, m.class_names)


class MaskVideo(_VideoOutput):
    """``<name>_mask.mp4``: each pixel in its class's colour (H.264: for viewing, not exact)."""

    suffix = "_mask.mp4"

    def __init__(
        self, stack: contextlib.ExitStack, target: Path, info: VideoInfo, meta: ModelMeta
    ) -> None:
        super().__init__(stack, target, info, meta)
        self._lut = np.zeros((256, 3), dtype=np.uint8)
        self._lut[: len(meta.colors)] = np.asarray(meta.colors, dtype=np.uint8)

    def picture(self, frame: VideoFrame) -> np.ndarray:
        return self._lut[frame.labels]


class PngMasks:
    """``<name>_masks/NNNNNN.png``: each frame's class indices with the class colours as palette,
    numbered from 000000, in a temporary folder renamed when the video is done."""

    suffix = "_masks"

    def __init__(
        self, stack: contextlib.ExitStack, target: Path, info: VideoInfo, meta: ModelMeta
    ) -> None:
        self.folder = stack.enter_context(atomic_folder(target))
        self.meta = meta

    def add(self, frame: VideoFrame) -> None:
        mask_image(frame.labels, self.meta.colors).save(self.folder / f"{frame.index:06d}.png")

    def finish(self) -> None:
        pass


# what --video-masks names
MASK_OUTPUTS: dict[str, type[_VideoOutput] | type[PngMasks]] = {
    "png": PngMasks,
    "video": MaskVideo,
}

# every file or folder a video may get, whatever the options: names (and resuming) never depend on them
_SUFFIXES = (OverlayVideo.suffix, PngMasks.suffix, MaskVideo.suffix)


def parse_video_masks(value: str) -> str | None:
    """``--video-masks``: ``none`` → ``None``; ``png`` and ``video`` as they are
    (:data:`MASK_OUTPUTS`)."""
    if value != "none" and value not in MASK_OUTPUTS:
        raise PixelwiseError(f"--video-masks {value!r}: expected none, {', '.join(MASK_OUTPUTS)}")
    return None if value == "none" else value


def _output_kinds(overlay: bool, masks: str | None) -> list[type[_VideoOutput] | type[PngMasks]]:
    if masks is not None and masks not in MASK_OUTPUTS:
        raise PixelwiseError(f"video masks {masks!r}: expected none, {', '.join(MASK_OUTPUTS)}")
    kinds: list[type[_VideoOutput] | type[PngMasks]] = [OverlayVideo] if overlay else []
    kinds += [MASK_OUTPUTS[masks]] if masks is not None else []
    if not kinds:
        raise PixelwiseError("nothing to write for a video: keep the overlay or ask for masks")
    return kinds


@dataclass
class VideoResult:
    """One video done: its ``source``, the ``outputs`` written, ``frames`` predicted, the frame
    size and rate, and the wall time."""

    source: Path
    outputs: list[Path]
    frames: int
    width: int
    height: int
    fps: Fraction
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def write_segmented_video(
    segmenter: Segmenter,
    source: str | os.PathLike[str] | VideoReader,
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    overlay: bool = True,
    masks: str | None = None,
    temporal: TemporalEMA | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> VideoResult:
    """Segment a video and write its outputs in ``out_dir`` (see the module's list): the overlay
    video, and with ``masks="png"`` or ``"video"`` the per-frame masks or a mask video. Output
    videos are H.264 MP4s at the input's frame rate and size (an odd side padded by one pixel).
    Nothing is renamed into place until the last frame is written: an exception or Ctrl-C leaves
    no output and no temporary file.

    Args:
        segmenter: the model and how to run it.
        source: a video file or a :class:`VideoReader` not yet read.
        out_dir: output folder (created).
        name: the outputs' name (default: the video's stem).
        overlay: write ``<name>_overlay.mp4``.
        masks: ``None``, ``"png"`` or ``"video"`` (:data:`MASK_OUTPUTS`).
        temporal: a stabiliser of the labels over time (:mod:`pixelwise.video.temporal`).
        batch_size: frames per forward pass.
        progress: show a progress bar of frames (with the time left when the frame count is known).
    """
    kinds, out = _output_kinds(overlay, masks), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader = source if isinstance(source, VideoReader) else None
    if reader is None:
        reader = open_video(source, channels=segmenter.meta.in_channels)
    info, t0, n = reader.info, time.perf_counter(), 0
    name = name or info.path.stem
    targets = [out / f"{name}{kind.suffix}" for kind in kinds]
    with (
        reader,
        contextlib.ExitStack() as stack,
        tqdm(total=info.frames, desc=name, unit="frame", disable=not progress) as bar,
    ):
        sinks = [
            kind(stack, t, info, segmenter.meta) for kind, t in zip(kinds, targets, strict=True)
        ]
        for frame in segment_video(segmenter, reader, batch_size=batch_size, temporal=temporal):
            for sink in sinks:
                sink.add(frame)
            n += 1
            bar.update(1)
        for sink in sinks:
            sink.finish()
    seconds = time.perf_counter() - t0
    return VideoResult(info.path, targets, n, info.width, info.height, info.fps, seconds)


@dataclass
class VideoSummary:
    """What a run over videos did: the videos written, the inputs skipped because all their outputs
    existed, failures (input, reason), inputs whose outputs are named after more than their stem
    (input, name; :func:`~pixelwise.engine.predict.output_names`), and the wall time."""

    written: list[VideoResult] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.written)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def predict_videos(
    segmenter: Segmenter,
    inputs: Iterable[str],
    out_dir: str | os.PathLike[str],
    *,
    overlay: bool = True,
    masks: str | None = None,
    temporal: TemporalEMA | None = None,
    overwrite: bool = False,
    batch_size: int = 4,
    progress: bool = True,
) -> VideoSummary:
    """Segment every video of ``inputs`` (files and glob patterns) with
    :func:`write_segmented_video`, named by :func:`~pixelwise.engine.predict.output_names` as
    ``predict`` names images. A video whose outputs all exist is skipped unless ``overwrite``; the
    temporary files a killed run left are removed first; SIGTERM stops the run as Ctrl-C does. A
    video that cannot be read or written is reported in the summary and the others go on. Under
    torchrun each process takes every ``WORLD_SIZE``-th video; the summary covers all processes.
    """
    kinds = _output_kinds(overlay, masks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, failed = expand_inputs(list(inputs))
    ctx = current_context()
    summary = VideoSummary(failed=failed if ctx.is_main else [])
    mine = shard(list(zip(paths, output_names(paths, lambda _: _SUFFIXES, out), strict=True)), ctx)
    remove_stale_temp_files(out, (n + end for _, n in mine for end in _SUFFIXES), folders=True)
    av = require_av()
    t0 = time.perf_counter()
    with terminate_as_interrupt():
        for path, name in mine:
            if not overwrite and all((out / f"{name}{k.suffix}").exists() for k in kinds):
                summary.skipped.append(path)
                continue
            try:
                summary.written.append(
                    write_segmented_video(
                        segmenter,
                        path,
                        out,
                        name=name,
                        overlay=overlay,
                        masks=masks,
                        temporal=temporal,
                        batch_size=batch_size,
                        progress=progress,
                    )
                )
            except (PixelwiseError, OSError, RuntimeError, av.FFmpegError) as exc:
                summary.failed.append((str(path), first_line(exc)))
                continue
            if name != path.stem:
                summary.renamed.append((path, name))
    summary.seconds = time.perf_counter() - t0
    return gathered(summary, ctx)
