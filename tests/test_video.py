"""Videos: ``pixelwise predict clip.mp4`` and :mod:`pixelwise.video` — frame count, rate and size
kept; per-frame masks equal to :meth:`Segmenter.segment` of each decoded frame (the one path);
interrupted runs leave no partial output and re-runs finish; bad videos are one-line errors; frames
are decoded lazily with a bounded read-ahead; temporal stabilisers and the flicker metric on
hand-checkable synthetic data. Videos are made with PyAV in ``tmp_path``."""

from __future__ import annotations

import itertools
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import COLORS, pixel_segmenter, tiny_unet_checkpoint
from PIL import Image

from pixelwise.engine import Segmenter
from pixelwise.engine.visualize import blend, overlay_with_inset_legend
from pixelwise.errors import PixelwiseError
from pixelwise.video import (
    TemporalEMA,
    TemporalFlow,
    VideoReader,
    flicker_rate,
    open_video,
    predict_videos,
    segment_video,
    temporal_stabilizer,
    write_segmented_video,
)
from pixelwise.video.temporal import flicker_counts

av = pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[1]


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    """Smooth frames (a lossy codec keeps them close): a colour gradient, a red square moving right
    by 2 pixels a frame and a green bar moving down by 1."""
    ys, xs = np.mgrid[0:h, 0:w]
    out = []
    for t in range(n):
        f = np.stack([xs * 200 // w, ys * 200 // h, np.full_like(xs, 60)], axis=-1).astype(np.uint8)
        f[h // 4 : h // 4 + h // 3, 2 * t % w : 2 * t % w + w // 4] = (230, 30, 30)
        f[(t % h) : (t % h) + 4, :] = (30, 220, 40)
        out.append(f)
    return out


def _write(
    path: Path, frames: list[np.ndarray], fps: Fraction | int = 10, codec: str = "libx264"
) -> Path:
    """A video of ``frames`` made with PyAV directly (not pixelwise's writer); ``ffv1`` in a
    Matroska file keeps odd sizes and exact pixels."""
    fmt = {".mkv": "matroska", ".avi": "avi", ".mov": "mov", ".webm": "webm"}.get(
        path.suffix, "mp4"
    )
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format=fmt) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = w, h
        s.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


def _probe(path: Path) -> tuple[int, Fraction, int, int]:
    """(frames decoded, average rate, width, height) of a video, read with PyAV."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return n, s.average_rate, s.codec_context.width, s.codec_context.height


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---- outputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "fps", "codec", "written"),
    [
        ("clip.mp4", (48, 64), Fraction(10), "libx264", (64, 48)),
        ("odd.mkv", (49, 65), Fraction(25, 2), "ffv1", (66, 50)),  # padded by one pixel per side
        ("clip.avi", (48, 64), Fraction(30000, 1001), "mpeg4", (64, 48)),
    ],
)
def test_output_videos_keep_the_frame_count_rate_and_size(
    tmp_path: Path,
    name: str,
    size: tuple[int, int],
    fps: Fraction,
    codec: str,
    written: tuple[int, int],
) -> None:
    src = _write(tmp_path / name, _frames(12, *size), fps, codec)
    result = write_segmented_video(
        pixel_segmenter(), src, tmp_path / "out", masks="video", batch_size=5, progress=False
    )
    stem = Path(name).stem
    assert result.outputs == [
        tmp_path / "out" / f"{stem}_overlay.mp4",
        tmp_path / "out" / f"{stem}_mask.mp4",
    ]
    assert (result.frames, result.width, result.height) == (12, size[1], size[0])
    for video in result.outputs:
        assert _probe(video) == (12, fps, *written)
    assert _leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("batch_size", [1, 4, 5])
def test_png_masks_are_the_segmenters_labels_of_each_decoded_frame(
    tmp_path: Path, batch_size: int
) -> None:
    src = _write(tmp_path / "clip.mp4", _frames(12, 48, 64))
    seg = pixel_segmenter()
    write_segmented_video(
        seg, src, tmp_path / "out", masks="png", batch_size=batch_size, progress=False
    )
    pngs = sorted((tmp_path / "out" / "clip_masks").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(12)]
    with open_video(src) as reader:
        decoded = list(reader)
    classes = set()
    for png, frame in zip(pngs, decoded, strict=True):
        mask = Image.open(png)
        assert mask.mode == "P" and mask.getpalette()[:9] == [0, 0, 0, 255, 0, 0, 0, 255, 0]
        expected = seg.segment(frame).labels
        np.testing.assert_array_equal(np.array(mask), expected)  # bit-identical: one path
        classes |= set(np.unique(expected).tolist())
    assert len(classes) >= 2  # the comparison is not between two blank masks


def test_the_overlay_video_shows_each_frame_blended_with_an_inset_legend(tmp_path: Path) -> None:
    src = _write(tmp_path / "clip.mp4", _frames(6, 96, 128))
    seg = pixel_segmenter()
    result = write_segmented_video(seg, src, tmp_path, progress=False)
    with open_video(src) as a, open_video(result.outputs[0]) as b:
        pairs = list(zip(a, b, strict=True))
    for frame, shown in pairs:
        labels = seg.segment(frame).labels
        expected = overlay_with_inset_legend(frame, labels, COLORS, seg.class_names)
        assert expected.shape == shown.shape == frame.shape
        err = np.abs(shown.astype(int) - expected).mean()
        assert err < 4, err  # H.264 at crf 18: a few levels on average
        plain = np.abs(shown.astype(int) - frame).mean()
        assert plain > 4 * err  # the blend is there, not the frame as it was


def test_inset_legend_keeps_the_frame_size_and_lists_the_classes_present() -> None:
    frame = np.full((120, 160, 3), 100, np.uint8)
    labels = np.zeros((120, 160), np.uint8)
    labels[:, 100:] = 2  # bg and green present, red absent
    out = overlay_with_inset_legend(frame, labels, COLORS, ["bg", "red", "green"])
    base = blend(frame, labels, COLORS)
    assert out.shape == frame.shape
    assert out[:20, :40].mean() > base[:20, :40].mean() + 50  # the legend's box is lightened
    # font 10 px for 120 rows, rows of 16: the box ends at row 6 + 2 × 16 = 38; below, the blend
    assert (out[37] != base[37]).any()
    np.testing.assert_array_equal(out[38:], base[38:])
    tiny = overlay_with_inset_legend(frame[:6, :8], labels[:6, :8], COLORS, ["bg", "red", "green"])
    np.testing.assert_array_equal(tiny, blend(frame[:6, :8], labels[:6, :8], COLORS))  # no room


# ---- interrupted runs ---------------------------------------------------------------------------------


def test_an_interrupted_run_leaves_no_output_and_a_rerun_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _write(tmp_path / "clip.mp4", _frames(12, 48, 64))
    out = tmp_path / "out"
    real, calls = Segmenter.segment_batch, []

    def interrupted(self, images, *, probs=False):  # noqa: ANN001, ANN202
        calls.append(len(images))
        if len(calls) == 2:  # Ctrl-C or SIGTERM (terminate_as_interrupt) mid-video
            raise KeyboardInterrupt
        return real(self, images, probs=probs)

    monkeypatch.setattr(Segmenter, "segment_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict_videos(
            pixel_segmenter(), [str(src)], out, masks="png", batch_size=4, progress=False
        )
    assert calls == [4, 4]
    assert sorted(p.name for p in out.iterdir()) == []  # no final file, no temporary file
    monkeypatch.setattr(Segmenter, "segment_batch", real)

    # what a SIGKILL leaves: temporary files and folders of this video's outputs (and others' kept)
    stale = [".clip_overlay.mp4.k2j9x_0a.tmp", ".clip_mask.mp4.abcdefgh.tmp"]
    for name in stale:
        (out / name).write_bytes(b"half a video")
    (out / ".clip_masks.q1w2e3r4.tmp").mkdir()
    (out / ".clip_masks.q1w2e3r4.tmp" / "000000.png").write_bytes(b"a frame")
    (out / ".notes.txt.abcdefgh.tmp").write_bytes(b"not this run's")
    summary = predict_videos(pixel_segmenter(), [str(src)], out, masks="png", progress=False)
    assert summary.failed == [] and summary.frames == 12
    assert _leftovers(out) == [".notes.txt.abcdefgh.tmp"]
    assert _probe(out / "clip_overlay.mp4")[0] == 12
    assert len(list((out / "clip_masks").iterdir())) == 12

    again = predict_videos(pixel_segmenter(), [str(src)], out, masks="png", progress=False)
    assert again.skipped == [src] and again.written == []  # all outputs there: skipped
    more = predict_videos(pixel_segmenter(), [str(src)], out, masks="video", progress=False)
    assert [r.source for r in more.written] == [src]  # the mask video was missing: redone
    assert (out / "clip_mask.mp4").is_file() and len(list((out / "clip_masks").iterdir())) == 12
    (out / "clip_masks" / "extra.png").write_bytes(b"not of this run")
    redo = predict_videos(
        pixel_segmenter(), [str(src)], out, masks="png", overwrite=True, progress=False
    )
    assert redo.frames == 12  # the masks folder is replaced whole, not merged
    assert sorted(p.name for p in (out / "clip_masks").iterdir()) == [
        f"{i:06d}.png" for i in range(12)
    ]
    assert _leftovers(out) == [".notes.txt.abcdefgh.tmp"]


def test_a_failed_video_is_reported_and_the_others_are_written(tmp_path: Path) -> None:
    good = _write(tmp_path / "a.mp4", _frames(5, 32, 32))
    other = _write(tmp_path / "sub" / "a.mov", _frames(5, 32, 32), codec="libx264")
    bad = tmp_path / "b.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    summary = predict_videos(
        pixel_segmenter(), [str(good), str(bad), str(other), str(tmp_path / "c.webm")], tmp_path / "out",
        progress=False,
    )  # fmt: skip
    assert [r.frames for r in summary.written] == [5, 5]
    assert [f[0] for f in summary.failed] == [str(tmp_path / "c.webm"), str(bad)]
    assert all("\n" not in reason for _, reason in summary.failed)
    # the same stem twice: named by the file name (the rule of images' outputs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.mov_overlay.mp4",
        "a.mp4_overlay.mp4",
    ]
    assert sorted(n for _, n in summary.renamed) == ["a.mov", "a.mp4"]


# ---- bad videos ------------------------------------------------------------------------------------


def _audio_only(path: Path) -> Path:
    with av.open(str(path), mode="w", format="matroska") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 8000, 0
        c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


def test_unreadable_videos_are_one_line_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    clip = _write(tmp_path / "clip.mp4", _frames(30, 48, 64))
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    cases = {
        text: "not a video pixelwise can read",
        _audio_only(tmp_path / "sound.mkv"): "holds no video stream",
        truncated: "not a video pixelwise can read",  # an MP4's index comes last: none here
    }
    for path, message in cases.items():
        with pytest.raises(PixelwiseError) as err:
            open_video(path)
        assert message in str(err.value) and path.name in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(
        PixelwiseError, match=r"frames of 64×48 = 3,072 pixels, over the limit of 3,000"
    ):
        VideoReader(clip, max_pixels=3000)


def test_without_pyav_the_error_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(PixelwiseError, match=r"pip install 'pixelwise\[video\]'"):
        open_video(tmp_path / "clip.mp4")


def test_the_command_line_writes_videos_and_images_and_reports_bad_ones(tmp_path: Path) -> None:
    ckpt = tiny_unet_checkpoint(tmp_path)
    clip = _write(tmp_path / "clip.webm", _frames(8, 32, 48), codec="libvpx-vp9")
    Image.fromarray(_frames(1, 32, 48)[0]).save(tmp_path / "still.png")
    (tmp_path / "broken.mov").write_bytes(b"garbage" * 50)
    out = tmp_path / "out"
    args = [str(clip), str(tmp_path / "still.png"), str(tmp_path / "broken.mov")]
    args += ["--out", str(out), "--model", str(ckpt), "--device", "cpu", "--quiet"]
    args += ["--video-masks", "png", "--temporal", "flow", "--workers", "0"]
    r = subprocess.run(
        [sys.executable, "-m", "pixelwise", "predict", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr  # one input failed, the others were written
    assert r.stderr.strip().splitlines() == [
        f"skipped: {tmp_path / 'broken.mov'}: not a video pixelwise can read "
        "(Invalid data found when processing input)"
    ]
    assert "wrote 1 video(s)" in r.stdout and "8 frames" in r.stdout
    assert "temporal flow, alpha 0.5" in r.stdout and "wrote 1 mask(s)" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "clip_masks",
        "clip_overlay.mp4",
        "still.png",
        "still_overlay.png",
    ]
    assert _probe(out / "clip_overlay.mp4")[:3] == (8, 10, 48)
    r = subprocess.run(
        [sys.executable, "-m", "pixelwise", "predict", *args[:1], *args[3:], "--temporal", "blur"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == "error: temporal mode 'blur': expected none, ema, flow"


# ---- lazy reading --------------------------------------------------------------------------------------


def test_frames_are_decoded_lazily_with_a_bounded_read_ahead(tmp_path: Path) -> None:
    src = _write(tmp_path / "long.mp4", _frames(300, 32, 32))
    reader = VideoReader(src, prefetch=2)
    frames = segment_video(pixel_segmenter(), reader, batch_size=2)
    first = list(itertools.islice(frames, 2))
    assert [f.index for f in first] == [0, 1]
    # the batch taken (2), the queue (2) and one frame waiting to be queued: at most 5 of 300
    assert 2 <= reader.frames_decoded <= 5
    frames.close()  # stops the decoding thread and closes the file
    assert reader._thread is not None and not reader._thread.is_alive()
    assert reader.frames_decoded <= 5
    assert sum(1 for _ in segment_video(pixel_segmenter(), src, batch_size=8)) == 300


def test_segment_video_yields_probabilities_and_alpha_zero_changes_nothing(tmp_path: Path) -> None:
    src = _write(tmp_path / "clip.mp4", _frames(6, 32, 48))
    seg = pixel_segmenter()
    plain = list(segment_video(seg, src, probs=True))
    still = list(segment_video(seg, src, temporal=TemporalEMA(0.0), probs=True))
    for a, b in zip(plain, still, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.probs, b.probs)
        assert a.probs.shape == (3, 32, 48)
        np.testing.assert_allclose(a.probs.sum(axis=0), 1.0, atol=1e-5)
    smooth = list(segment_video(seg, src, temporal=TemporalEMA(0.8)))
    assert smooth[0].probs is None  # not asked for
    np.testing.assert_array_equal(smooth[0].labels, plain[0].labels)  # s_0 = p_0


# ---- temporal stabilisers -------------------------------------------------------------------------------


def _one_pixel(p_class0: float) -> np.ndarray:
    return np.array([[[p_class0]], [[1 - p_class0]]], np.float32)  # K=2 × 1 × 1


def test_ema_follows_its_formula_and_stops_a_flickering_pixel() -> None:
    ema, frame = TemporalEMA(0.5), np.zeros((1, 1, 3), np.uint8)
    seq = [0.9, 0.4, 0.9, 0.4, 0.9, 0.4]  # class 0's probability: the raw label flips every frame
    out = [float(ema(_one_pixel(p), frame)[0, 0, 0]) for p in seq]
    # s0 = 0.9; s_t = 0.5 s_{t-1} + 0.5 p_t
    np.testing.assert_allclose(out, [0.9, 0.65, 0.775, 0.5875, 0.74375, 0.571875], rtol=1e-6)
    raw = [np.array([[0 if p > 0.5 else 1]]) for p in seq]
    smoothed = [np.array([[0 if s > 0.5 else 1]]) for s in out]
    assert flicker_rate(raw) == 1.0 and flicker_rate(smoothed) == 0.0
    ema.reset()
    assert float(ema(_one_pixel(0.4), frame)[0, 0, 0]) == pytest.approx(0.4)  # a new video


def test_ema_reduces_flicker_on_a_static_scene_with_label_noise() -> None:
    rng = np.random.default_rng(0)
    h, w, n = 40, 60, 30
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2 :] = 1
    ema, frame = TemporalEMA(0.6), np.zeros((h, w, 3), np.uint8)
    raw, smooth = [], []
    for _ in range(n):
        noisy = rng.random((h, w)) < 0.2  # a fifth of the pixels lean (0.6) to the wrong class
        p_true = np.where(noisy, 0.4, 0.9).astype(np.float32)
        p1 = np.where(truth == 1, p_true, 1 - p_true)
        probs = np.stack([1 - p1, p1])
        raw.append(probs.argmax(0))
        smooth.append(ema(probs, frame).argmax(0))
    targets = [truth] * n
    # raw: a pixel changes when exactly one of two frames is noisy, 2 × 0.2 × 0.8 = 0.32
    assert flicker_rate(raw, targets) == pytest.approx(0.32, abs=0.02)
    # smoothed, a wrong label needs ≥ 2 noisy frames in a row after a clean one (p ≈ 0.04 per
    # frame, two changes each): well under a tenth of the raw flicker
    assert flicker_rate(smooth, targets) < 0.32 / 10
    assert np.mean([(s != truth).mean() for s in smooth]) < np.mean(
        [(r != truth).mean() for r in raw]
    )


def _moving_scene(n: int, h: int, w: int, speed: int) -> tuple[list, list, list]:
    """A textured scene moving right by ``speed`` pixels a frame: the frames, each pixel's class
    (1 where the scene's x >= w/2, so the edge between the classes moves right with the scene) and
    confident probabilities (0.9) of it."""
    import cv2

    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (h, w + speed * n)).astype(np.float32)
    scene = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2), None, 0, 255, cv2.NORM_MINMAX)
    frames, truths, probs = [], [], []
    for t in range(n):
        x0 = speed * (n - t)  # frame t shows scene[:, x0 : x0 + w]; x0 falls, content moves right
        frames.append(np.repeat(scene[:, x0 : x0 + w, None].astype(np.uint8), 3, axis=2))
        truth = np.broadcast_to((np.arange(x0, x0 + w) >= w // 2).astype(np.int64), (h, w))
        p1 = np.where(truth == 1, 0.9, 0.1).astype(np.float32)
        truths.append(truth)
        probs.append(np.stack([1 - p1, p1]))
    return frames, truths, probs


def test_flow_alignment_beats_plain_ema_at_a_moving_edge() -> None:
    h, w, speed, n = 48, 96, 3, 8
    frames, truths, probs = _moving_scene(n, h, w, speed)
    assert truths[0].sum() - truths[-1].sum() == (n - 1) * speed * h  # the edge moves
    errors = {}
    for stabilizer in (TemporalEMA(0.6), TemporalFlow(0.6)):
        labels = [stabilizer(p, f).argmax(0) for p, f in zip(probs, frames, strict=True)]
        errors[stabilizer.name] = int((labels[-1] != truths[-1]).sum())
    # plain EMA, α = 0.6: a pixel the edge crossed one frame ago has 0.6·0.1 + 0.4·0.9 = 0.42 for
    # its new class (still wrong), two frames ago 0.6·0.42 + 0.4·0.9 = 0.612 (right): exactly the
    # last frame's band of `speed` columns is wrong
    assert errors["ema"] == speed * h
    assert errors["flow"] <= errors["ema"] // 4


def test_flow_of_a_static_scene_moves_nothing() -> None:
    frames, _, probs = _moving_scene(2, 32, 48, 0)
    flow = TemporalFlow(0.5)
    flow(probs[0], frames[0])
    np.testing.assert_allclose(flow(probs[1], frames[1]), probs[1], atol=1e-4)


def test_stabilizer_factory_and_bad_alphas() -> None:
    assert temporal_stabilizer("none") is None and temporal_stabilizer(None) is None
    s = temporal_stabilizer("flow", 0.25)
    assert isinstance(s, TemporalFlow) and s.alpha == 0.25
    assert temporal_stabilizer("ema").alpha == 0.5  # type: ignore[union-attr]
    for alpha in (1.0, -0.1, True, "0.5"):
        with pytest.raises(PixelwiseError, match="alpha must lie in"):
            TemporalEMA(alpha)  # type: ignore[arg-type]
    with pytest.raises(PixelwiseError, match="expected none, ema, flow"):
        temporal_stabilizer("median")
    with pytest.raises(PixelwiseError, match="needs --temporal"):
        temporal_stabilizer("none", 0.3)


# ---- flicker -----------------------------------------------------------------------------------------


def test_flicker_counts_only_pixels_whose_ground_truth_stays() -> None:
    gt0 = np.array([[0, 0], [1, 255]])
    gt1 = np.array([[0, 1], [1, 255]])  # (0, 1) changes; (1, 1) ignored
    p0 = np.array([[0, 0], [1, 0]])
    p1 = np.array([[2, 1], [1, 1]])  # changes at (0, 0) [stable gt], (0, 1) [gt changed], (1, 1)
    assert flicker_counts(p0, p1, gt0, gt1, ignore_index=255) == (1, 2)  # 1 of (0,0), (1,0)
    assert flicker_counts(p0, p1, gt0, gt1) == (2, 3)  # (1, 1) counts when not ignored
    assert flicker_counts(p0, p1) == (3, 4)  # no ground truth: every pixel
    p2 = p1.copy()
    # frames 0→1: 1 changed of 2 stable; frames 1→2: 0 of 3 (gt1 twice, 255 ignored) → 1 / 5,
    # the totals' ratio (the mean of the pairs' rates would be 1 / 4)
    assert flicker_rate([p0, p1, p2], [gt0, gt1, gt1], ignore_index=255) == pytest.approx(1 / 5)
    assert flicker_rate([p0]) == 0.0
    with pytest.raises(ValueError):
        flicker_rate([p0, p1], [gt0])
