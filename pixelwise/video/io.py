"""Reading and writing videos with PyAV (FFmpeg's libraries in a wheel: no system ffmpeg).

:class:`VideoReader` decodes one video stream to RGB uint8 frames in a background thread, into a
bounded queue (:data:`DEFAULT_PREFETCH` frames), so decoding runs ahead of the model while memory
stays flat whatever the video's length. :class:`VideoWriter` encodes RGB frames to H.264 (libx264,
yuv420p: plays everywhere) in an MP4 at a constant frame rate. yuv420p needs even sides: an odd
width or height is padded by one pixel, a copy of the last column or row.

PyAV is an optional dependency (``pip install 'pixelwise[video]'``), imported on first use.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType

import numpy as np

from ..errors import PixelwiseError, first_line, printable

__all__ = [
    "DEFAULT_PREFETCH",
    "MAX_FPS",
    "MAX_FRAME_PIXELS",
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "is_video_path",
    "open_video",
    "require_av",
]

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".webm", ".mov", ".mkv"})

# Frames decoded ahead of the model: with the batch being predicted and the encoder's look-ahead,
# what a video holds in memory (a 1920×1080 RGB frame is 6 MB).
DEFAULT_PREFETCH = 8

# The largest frame decoded (width × height): the largest image `predict` writes an overlay for.
MAX_FRAME_PIXELS = 4096 * 4096

# Frame rates beyond this are refused as absurd (a broken header), as are rates <= 0.
MAX_FPS = 1000

# libx264: CRF 18 (near-lossless to the eye), a fast preset (encoding costs CPU beside the model)
_H264_OPTIONS = {"crf": "18", "preset": "veryfast"}

# an FFmpeg error's number and the file name it repeats: "[Errno 1094995529] ...: 'x.mp4'"
_FFMPEG_ERROR = re.compile(r"^\[Errno -?\d+\] |: '[^']*'$")


def require_av() -> ModuleType:
    """The ``av`` module (PyAV), or a one-line error saying how to install it."""
    try:
        import av
    except ImportError:
        raise PixelwiseError(
            "videos need PyAV: pip install 'pixelwise[video]' (or pip install av)"
        ) from None
    return av


def is_video_path(item: str | os.PathLike[str]) -> bool:
    """Whether a path (or glob pattern) names a video, by its extension (:data:`VIDEO_EXTENSIONS`)."""
    return Path(item).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: frame size, frame rate (average), frame count (``None`` when
    neither the container nor the duration tells), codec name."""

    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int | None
    codec: str


class VideoReader:
    """The frames of a video's first video stream, RGB uint8 H×W×3 (H×W×1 with ``channels=1``),
    decoded ahead in a background thread into a queue of at most ``prefetch`` frames.

    Iterate once; :meth:`close` (or leaving a ``with`` block, or closing the iterator early) stops
    the thread and closes the file. :attr:`frames_decoded` counts the frames decoded so far.
    Every frame has the header's size (a stream that changes size midway is rescaled to it).

    Raises:
        PixelwiseError: one line, naming the file: not a video PyAV reads, no video stream, a frame
            size over ``max_pixels`` or an absurd frame rate (before decoding anything), or a frame
            that cannot be decoded (while iterating).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        channels: int = 3,
        prefetch: int = DEFAULT_PREFETCH,
        max_pixels: int = MAX_FRAME_PIXELS,
    ) -> None:
        av = require_av()
        if channels not in (1, 3):
            raise PixelwiseError(
                f"video frames are RGB or grey; this model takes {channels} channels"
            )
        if prefetch < 1:
            raise PixelwiseError(f"prefetch must be >= 1 frame, got {prefetch}")
        self.path, self._format = Path(path), "gray" if channels == 1 else "rgb24"
        self._av = av
        try:
            self._container = av.open(os.fspath(path), metadata_errors="ignore")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise PixelwiseError(
                f"{self._name}: not a video pixelwise can read ({_reason(exc)})"
            ) from None
        try:
            self.info = self._read_info(max_pixels)
        except BaseException:
            self._container.close()
            raise
        self.frames_decoded = 0
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _name(self) -> str:
        return printable(self.path)

    def _read_info(self, max_pixels: int) -> VideoInfo:
        if not self._container.streams.video:
            raise PixelwiseError(f"{self._name}: holds no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's own frame/slice threads
        ctx = stream.codec_context
        w, h = int(ctx.width or 0), int(ctx.height or 0)
        if w < 1 or h < 1:
            raise PixelwiseError(f"{self._name}: the video stream states no frame size")
        if w * h > max_pixels:
            raise PixelwiseError(
                f"{self._name}: frames of {w}×{h} = {w * h:,} pixels, over the limit of "
                f"{max_pixels:,}; scale the video down first"
            )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if rate is None or not 0 < rate <= MAX_FPS:
            raise PixelwiseError(f"{self._name}: frame rate {rate} is not in (0, {MAX_FPS}] fps")
        frames = int(stream.frames or 0) or None
        if frames is None and stream.duration and stream.time_base:
            frames = max(1, round(float(stream.duration * stream.time_base * rate)))
        elif frames is None and self._container.duration:
            frames = max(1, round(self._container.duration / 1_000_000 * float(rate)))
        return VideoInfo(self.path, w, h, Fraction(rate), frames, str(ctx.name))

    def _decode(self) -> None:
        """The background thread: frames, then ``None``; or the exception that stopped it."""
        stream = self._container.streams.video[0]
        size = {"width": self.info.width, "height": self.info.height}
        try:
            for frame in self._container.decode(stream):
                image = frame.to_ndarray(format=self._format, **size)
                self.frames_decoded += 1
                if not self._put(image[..., None] if image.ndim == 2 else image):
                    return
                if self._stop.is_set():  # closed while this frame was being queued: no more
                    return
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._thread is not None:
            raise PixelwiseError(f"{self._name}: a VideoReader is read once; open the video again")
        self._thread = threading.Thread(target=self._decode, name="pixelwise-video", daemon=True)
        self._thread.start()
        index = 0
        try:
            while (item := self._queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise self._error(item, index)
                yield item
                index += 1
        finally:
            self.close()
        if index == 0:
            raise PixelwiseError(f"{self._name}: holds no video frames that can be decoded")

    def _error(self, exc: BaseException, index: int) -> BaseException:
        if isinstance(exc, (self._av.FFmpegError, OSError, ValueError)):
            return PixelwiseError(f"{self._name}: cannot decode frame {index}: {_reason(exc)}")
        return exc

    def close(self) -> None:
        """Stop decoding and close the file (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            while self._thread.is_alive():  # the thread may wait on a full queue: make room
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(timeout=0.05)
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_video(
    path: str | os.PathLike[str], *, channels: int = 3, prefetch: int = DEFAULT_PREFETCH
) -> VideoReader:
    """A :class:`VideoReader` of ``path``; its header is read (and checked) at once."""
    return VideoReader(path, channels=channels, prefetch=prefetch)


class VideoWriter:
    """Encodes RGB uint8 frames (H×W×3, all one size) to H.264 in an MP4 at ``fps`` frames per
    second, constant rate. An odd ``width`` or ``height`` is padded by one pixel (a copy of the last
    column or row): yuv420p stores colour at half resolution and needs even sides.

    Writes to ``path`` as it goes; :meth:`close` flushes the encoder and finishes the file. Use it
    on a temporary path (:func:`pixelwise._atomic.atomic_path`): the MP4 is unplayable until
    closed.
    """

    def __init__(
        self, path: str | os.PathLike[str], fps: Fraction, width: int, height: int
    ) -> None:
        av = require_av()
        self.width, self.height = width, height
        self._container = av.open(os.fspath(path), mode="w", format="mp4")
        try:
            self._stream = self._container.add_stream("libx264", rate=fps, options=_H264_OPTIONS)
            self._stream.width, self._stream.height = width + width % 2, height + height % 2
            self._stream.pix_fmt = "yuv420p"
        except BaseException:
            self._container.close()
            raise
        self._av, self.frames_written, self._closed = av, 0, False

    def write(self, image: np.ndarray) -> None:
        """Encode one frame (H×W×3 uint8 of the writer's size)."""
        if image.shape != (self.height, self.width, 3):
            raise PixelwiseError(
                f"a {self.width}×{self.height} video gets a frame of shape {image.shape}"
            )
        pad = ((0, self.height % 2), (0, self.width % 2), (0, 0))
        if self.height % 2 or self.width % 2:
            image = np.pad(image, pad, mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames_written
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def abort(self) -> None:
        """Close the file without flushing (its content is of no use after)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):  # never hide the error that aborts the write
                self._container.close()


def _reason(exc: BaseException) -> str:
    """One line of a PyAV/FFmpeg error, without its error number and the file name it repeats:
    ``[Errno 1094995529] Invalid data found when processing input: 'x.mp4'`` → ``Invalid data
    found when processing input``."""
    text = first_line(exc, default=type(exc).__name__)
    return _FFMPEG_ERROR.sub("", text) or text
