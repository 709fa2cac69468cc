"""Videos in, segmented videos out: ``pixelwise predict clip.mp4`` and its Python API.

Decoding and encoding use PyAV (FFmpeg in a wheel; ``pip install 'pixelwise[video]'``), imported on
first use. Frames are decoded ahead in a thread into a bounded queue and predicted in batches
through the one prediction path (:meth:`pixelwise.Segmenter.segment_batch`), so memory stays flat
whatever the video's length::

    import pixelwise as pw

    seg = pw.load("camvid")
    for frame in pw.segment_video(seg, "drive.mp4", temporal=pw.video.TemporalFlow(0.5)):
        frame.index, frame.image, frame.labels          # H×W×3 uint8, H×W uint8
    pw.write_segmented_video(seg, "drive.mp4", "out/", masks="png")

- :mod:`.io`: :class:`VideoReader` / :func:`open_video` (RGB frames, fps, size, frame count) and
  :class:`VideoWriter` (H.264 MP4);
- :mod:`.segment`: :func:`segment_video` (an iterator of :class:`VideoFrame`),
  :func:`write_segmented_video` (one video's overlay video, masks), :func:`predict_videos` (many,
  as ``pixelwise predict`` runs them);
- :mod:`.temporal`: :class:`TemporalEMA` and :class:`TemporalFlow` (labels stabilised over time)
  and :func:`flicker_rate`.
"""

from .io import (
    VIDEO_EXTENSIONS,
    VideoInfo,
    VideoReader,
    VideoWriter,
    is_video_path,
    open_video,
)
from .segment import (
    MASK_OUTPUTS,
    VideoFrame,
    VideoResult,
    VideoSummary,
    parse_video_masks,
    predict_videos,
    segment_video,
    write_segmented_video,
)
from .temporal import (
    DEFAULT_ALPHA,
    TemporalEMA,
    TemporalFlow,
    flicker_rate,
    temporal_stabilizer,
)

__all__ = [
    "DEFAULT_ALPHA",
    "MASK_OUTPUTS",
    "VIDEO_EXTENSIONS",
    "TemporalEMA",
    "TemporalFlow",
    "VideoFrame",
    "VideoInfo",
    "VideoReader",
    "VideoResult",
    "VideoSummary",
    "VideoWriter",
    "flicker_rate",
    "is_video_path",
    "open_video",
    "parse_video_masks",
    "predict_videos",
    "segment_video",
    "temporal_stabilizer",
    "write_segmented_video",
]
