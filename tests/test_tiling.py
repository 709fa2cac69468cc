"""Sliding-window inference (:mod:`pixelwise.engine.tiling`): window placement, blend weights,
equality with whole-image inference for per-pixel models, real blending across overlaps, streaming in
bounded bands, and the peak memory of labelling an 8192×8192 image."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pixelwise.engine import tiling
from pixelwise.engine.tiling import (
    TileConfig,
    blend_weights,
    slide_labels,
    slide_logits,
    slide_rows,
    window_starts,
)
from pixelwise.errors import PixelwiseError

pytestmark = pytest.mark.usefixtures("one_thread")

BLENDS = ("gaussian", "linear", "uniform")


def _preprocess(image: np.ndarray) -> torch.Tensor:
    """uint8 h×w×3 → 3×h×w float32 in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255.0


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pixel_model(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(3, classes, 1).eval()


# --- window placement -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "window", "stride", "starts"),
    [
        (10, 4, 3, [0, 3, 6]),
        (1000, 512, 384, [0, 384, 488]),
        (1024, 512, 256, [0, 256, 512]),  # the grid lands on the end: no extra window
        (11, 4, 4, [0, 4, 7]),  # no overlap, last window moved back to the end
        (4, 4, 1, [0]),
        (3, 512, 384, [0]),  # the window is longer than the image
        (5, 4, 1, [0, 1]),
    ],
)
def test_window_starts_examples(length: int, window: int, stride: int, starts: list[int]) -> None:
    assert window_starts(length, window, stride) == starts


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 3000),
    window=st.integers(1, 600),
    stride_fraction=st.floats(0.0, 1.0),
)
def test_window_starts_cover_in_order_with_bounded_steps(
    length: int, window: int, stride_fraction: float
) -> None:
    stride = max(1, round(window * stride_fraction))
    starts = window_starts(length, window, stride)
    assert starts[0] == 0
    if window >= length:
        assert starts == [0]
        return
    assert starts[-1] == length - window  # aligned to the end, never past it
    steps = np.diff(starts)
    assert (steps > 0).all() and (steps <= stride).all()
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()


@pytest.mark.parametrize(
    ("length", "window", "stride"), [(0, 4, 1), (10, 0, 1), (10, 4, 0), (10, 4, 5)]
)
def test_window_starts_rejects_bad_arguments(length: int, window: int, stride: int) -> None:
    with pytest.raises(PixelwiseError, match="window_starts"):
        window_starts(length, window, stride)


# --- blend weights --------------------------------------------------------------------------------


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize(("h", "w"), [(32, 32), (17, 24), (1, 5)])
def test_blend_weights_positive_symmetric_peaked(blend: str, h: int, w: int) -> None:
    wt = blend_weights(h, w, blend)
    assert wt.shape == (h, w) and wt.dtype == torch.float32
    assert (wt > 0).all()
    torch.testing.assert_close(wt, wt.flip(0))
    torch.testing.assert_close(wt, wt.flip(1))
    assert wt.max() == pytest.approx(1.0)
    assert wt[(h - 1) // 2, (w - 1) // 2] == wt.max()  # the centre weighs most


def test_blend_weights_shapes_and_floor() -> None:
    assert torch.equal(blend_weights(7, 9, "uniform"), torch.ones(7, 9))
    g = blend_weights(64, 64, "gaussian")
    assert g.min() == pytest.approx(1e-3)  # the corners, clamped
    assert g[0, 32] < 0.01 < g[16, 32] < g[32, 32]  # falls off towards the edges
    lin = blend_weights(8, 1, "linear")[:, 0]  # tent: 1/4, 2/4, 3/4, 1, 1, 3/4, 2/4, 1/4
    torch.testing.assert_close(lin, torch.tensor([1, 2, 3, 4, 4, 3, 2, 1]) / 4.0)
    with pytest.raises(PixelwiseError, match="blend"):
        blend_weights(4, 4, "cosine")


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "tiles"}, "mode"),
        ({"blend": "cosine"}, "blend"),
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"window": 8}, "window"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_whole_pixels": 0}, "max_whole_pixels"),
    ],
)
def test_tile_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(PixelwiseError, match=match):
        TileConfig(**kwargs)


def test_tile_config_chooses_slide_by_mode_and_size() -> None:
    auto = TileConfig(max_whole_pixels=100 * 100)
    assert not auto.use_slide(100, 100) and auto.use_slide(100, 101)
    assert TileConfig(mode="slide").use_slide(10, 10)
    assert not TileConfig(mode="whole").use_slide(10_000, 10_000)


# --- sliding equals whole for a per-pixel model ---------------------------------------------------


@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize(
    ("h", "w", "window", "overlap", "batch"),
    [
        (97, 131, 32, 0.5, 3),
        (50, 40, 16, 0.0, 1),
        (20, 25, 64, 0.25, 4),  # smaller than the window: one window, the whole image
        (33, 200, 32, 0.9, 5),
    ],
)
def test_sliding_logits_equal_whole_image_logits(
    blend: str, h: int, w: int, window: int, overlap: float, batch: int
) -> None:
    model = _pixel_model()
    image = _image(h, w)
    cfg = TileConfig(mode="slide", window=window, overlap=overlap, blend=blend, batch_size=batch)
    with torch.no_grad():
        whole = model(_preprocess(image)[None])[0]
        slid = slide_logits(image, _preprocess, model, 5, cfg)
        labels = slide_labels(image, _preprocess, model, 5, cfg, to_labels=lambda b: b.argmax(0))
    assert slid.shape == (5, h, w) and slid.dtype == torch.float32
    torch.testing.assert_close(slid, whole, rtol=0, atol=1e-5)
    assert labels.dtype == np.uint8 and labels.shape == (h, w)
    assert np.array_equal(labels, whole.argmax(0).numpy())


def test_sliding_reads_a_memmap(tmp_path) -> None:
    image = _image(70, 45)
    mm = np.memmap(tmp_path / "im.raw", np.uint8, "w+", shape=image.shape)
    mm[:] = image
    model = _pixel_model(3)
    cfg = TileConfig(window=16, overlap=0.5)
    with torch.no_grad():
        got = slide_logits(mm, _preprocess, model, 3, cfg)
        torch.testing.assert_close(got, model(_preprocess(image)[None])[0], rtol=0, atol=1e-5)


# --- blending really blends -----------------------------------------------------------------------


def test_overlapping_windows_are_mixed_not_seamed() -> None:
    """Window k (in call order, batch 1) predicts the constant k. A 16×40 image in 16×16 windows with
    stride 8 has windows at x = 0, 8, 16, 24: every pixel inside the overlaps is a weighted mixture
    of its windows' constants, strictly between them."""
    calls = []

    def constant_per_call(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(calls))
        return torch.full((batch.shape[0], 1, *batch.shape[2:]), float(len(calls) - 1))

    cfg = TileConfig(mode="slide", window=16, overlap=0.5, blend="gaussian", batch_size=1)
    out = slide_logits(_image(16, 40), _preprocess, constant_per_call, 1, cfg)[0]
    assert len(calls) == 4  # windows at x = 0, 8, 16, 24
    row = out[8]
    torch.testing.assert_close(row[:8], torch.zeros(8))  # only window 0
    torch.testing.assert_close(row[32:], torch.full((8,), 3.0))  # only window 3
    for k in range(3):  # overlap of windows k and k + 1: x in [8(k+1), 8(k+1) + 8)
        mixed = row[8 * (k + 1) : 8 * (k + 2)]
        assert ((mixed > k) & (mixed < k + 1)).all(), mixed
        assert (mixed.diff() > 0).all()  # a smooth ramp from one window to the next
    # the weights are symmetric about the middle of each overlap, so mirrored pixels average to
    # the mean of the two constants; with uniform weights every overlap pixel is that mean
    for k in range(3):
        assert (row[8 * k + 11] + row[8 * k + 12]).item() == pytest.approx(2 * k + 1)
    calls.clear()
    cfg = TileConfig(mode="slide", window=16, overlap=0.5, blend="uniform", batch_size=1)
    row = slide_logits(_image(16, 40), _preprocess, constant_per_call, 1, cfg)[0, 8]
    for k in range(3):
        torch.testing.assert_close(row[8 * (k + 1) : 8 * (k + 2)], torch.full((8,), k + 0.5))


# --- streaming ------------------------------------------------------------------------------------


def test_rows_stream_in_order_as_soon_as_finished() -> None:
    """Blocks cover each row once, top to bottom, are at most one window tall, and each one is
    yielded before the window row below it runs — the accumulator holds one band, not the image."""
    h, w, window = 100, 30, 16
    cfg = TileConfig(mode="slide", window=window, overlap=0.25, batch_size=8)  # stride 12
    ys = window_starts(h, window, 12)
    events: list[tuple] = []

    def spy(batch: torch.Tensor) -> torch.Tensor:
        events.append(("run",))
        return torch.zeros(batch.shape[0], 2, *batch.shape[2:])

    next_row = 0
    for y0, block in slide_rows(_image(h, w), _preprocess, spy, 2, cfg):
        rows_run = sum(e == ("run",) for e in events)
        events.append(("yield", y0))
        assert y0 == next_row and block.shape[0] == 2 and block.shape[2] == w
        assert 1 <= block.shape[1] <= window
        next_row = y0 + block.shape[1]
        if next_row < h:
            # rows y0:next_row are yielded as soon as the window row starting at next_row is
            # about to run: exactly the window rows above it have run (one batch per window row)
            assert next_row in ys
            assert rows_run == ys.index(next_row)
    assert next_row == h
    assert len(ys) == 8 and sum(e[0] == "yield" for e in events) == len(ys)


def test_wide_bands_are_yielded_in_bounded_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 3-row block limit, finished rows come out at most three at a time, in order, and still
    blend exactly."""
    monkeypatch.setattr(tiling, "BLOCK_FLOATS", 3 * 5 * 29)  # K = 5, W = 29
    model, image = _pixel_model(), _image(41, 29)
    cfg = TileConfig(mode="slide", window=16, overlap=0.5)
    with torch.no_grad():
        blocks = list(slide_rows(image, _preprocess, model, 5, cfg))
        whole = model(_preprocess(image)[None])[0]
    assert all(1 <= b.shape[1] <= 3 for _, b in blocks)
    assert [y0 for y0, _ in blocks] == list(np.cumsum([0] + [b.shape[1] for _, b in blocks[:-1]]))
    torch.testing.assert_close(torch.cat([b for _, b in blocks], 1), whole, rtol=0, atol=1e-5)


def test_window_logits_of_the_wrong_shape_is_an_error() -> None:
    cfg = TileConfig(window=16)
    with pytest.raises(PixelwiseError, match="window_logits returned"):
        slide_logits(_image(20, 20), _preprocess, _pixel_model(4), 5, cfg)
    with pytest.raises(PixelwiseError, match="to_labels returned shape"):
        slide_labels(_image(20, 20), _preprocess, _pixel_model(4), 4, cfg, lambda b: b)
    with pytest.raises(PixelwiseError, match="image"):
        slide_logits(np.zeros((0, 5, 3), np.uint8), _preprocess, _pixel_model(4), 4, cfg)


# --- peak memory ----------------------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent(
    """
    def peak_kib():
        # VmHWM: this process's peak resident set. Not ru_maxrss, which Linux carries over an exec
        # from the forked parent (here pytest, which may already hold gigabytes).
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

    import numpy as np
    import torch
    from torch import nn

    from pixelwise.engine.tiling import TileConfig, slide_labels

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Conv2d(3, 12, 1).eval()
    # random bytes straight into uint8 (integers() may build an int64 array first: 1.5 GiB)
    image = np.frombuffer(np.random.default_rng(0).bytes(8192 * 8192 * 3), np.uint8)
    image = image.reshape(8192, 8192, 3)
    before = peak_kib()  # torch, pixelwise, the image

    def preprocess(crop):
        return torch.from_numpy(crop).permute(2, 0, 1).float().div_(255.0)

    with torch.no_grad():
        labels = slide_labels(
            image, preprocess, model, 12, TileConfig(mode="slide", window=512),
            to_labels=lambda block: block.argmax(0),
        )
    assert labels.shape == (8192, 8192) and labels.dtype == np.uint8
    assert int(labels.max()) < 12
    print(before, peak_kib())
    """
)


@pytest.mark.slow
def test_labels_of_an_8192_square_image_stay_under_2_gib() -> None:
    """Whole-image logits alone would be 12 × 8192² × 4 B = 3 GiB; sliding keeps a 512-row band
    (about 200 MiB of accumulator) and writes labels as rows finish."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    before_kib, peak_kib = (int(v) for v in done.stdout.split()[-2:])
    peak, added = peak_kib / 1024, (peak_kib - before_kib) / 1024
    report = (
        f"peak RSS labelling 8192×8192×3, 12 classes, window 512: {peak:.0f} MiB, of which "
        f"{added:.0f} MiB on top of the {before_kib / 1024:.0f} MiB held before predicting (torch, "
        "pixelwise and the 192 MiB image)"
    )
    print("\n" + report)
    assert peak < 2048, f"{report}: not under 2 GiB"
    assert added < 1024, f"{report}: sliding added more than 1 GiB"
