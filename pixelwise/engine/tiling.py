"""Sliding-window inference: predict an image of any size in overlapping windows and blend them.

A window of ``window × window`` pixels (clipped to the image per axis) slides over the image with a
stride of ``round(window · (1 - overlap))`` per axis; the last window of a row or column is aligned to the
image's end, so every pixel is covered and no window is padded (:func:`window_starts`, as mmseg's
``slide_inference`` places them). Each pixel's logit is the weighted average of the logits of the
windows covering it, ``Σ w · logit / Σ w``, with per-window weights from :func:`blend_weights`:
``gaussian`` (nnU-Net, Isensee et al., Nature Methods 2021: centre pixels, which see the most
context, count most), ``linear`` (a separable tent) or ``uniform`` (plain averaging, as mmseg does).

The core, :func:`slide_rows`, streams: it walks the window rows top to bottom, keeps an accumulator
only for the band of image rows that a window row not yet processed can still touch (``window`` rows
of K logit channels plus their weight sums) and yields finished rows as soon as no later window
touches them. Each window crop is preprocessed on its own, so neither the normalised image nor the
whole image's logits is ever held: an 8192×8192 image with 12 classes needs a 192 MiB accumulator
instead of the 3 GiB of its full logits (labelling it through :func:`slide_labels` with a tiny model
adds about 490 MiB to the process in all, see ``tests/test_tiling.py``). :func:`slide_labels` turns
each yielded block into labels straight away; :func:`slide_logits` concatenates the blocks for images
small enough to hold.

::

    cfg = TileConfig(window=512, overlap=0.25)
    if cfg.use_slide(h, w):
        labels = slide_labels(image, preprocess, logits_fn, k, cfg, to_labels=lambda b: b.argmax(0))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import PixelwiseError

__all__ = [
    "BLENDS",
    "MODES",
    "TileConfig",
    "blend_weights",
    "padded_size",
    "slide_labels",
    "slide_logits",
    "slide_rows",
    "window_starts",
]

MODES = ("auto", "whole", "slide")
BLENDS = ("gaussian", "linear", "uniform")

# The smallest blend weight: see :func:`blend_weights`.
MIN_WEIGHT = 1e-3
# The largest block :func:`slide_rows` yields, in float32 values (32 MiB), unless one row is larger.
BLOCK_FLOATS = 1 << 23

Preprocess = Callable[[np.ndarray], torch.Tensor]
WindowLogits = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TileConfig:
    """How to predict a large image: whole, or in blended sliding windows.

    Args:
        mode: ``whole`` (one forward pass over the image), ``slide`` (always in windows) or
            ``auto`` (whole when the padded ``height · width <= max_whole_pixels``, else slide).
        window: square window side in pixels, at least 16; clipped to the image's size per axis.
        overlap: fraction of the window shared by neighbouring windows, ``0 <= overlap < 1``;
            the stride is ``round(window · (1 - overlap))`` (at least 1).
        blend: window weights, ``gaussian``, ``linear`` or ``uniform`` (see :func:`blend_weights`).
        batch_size: windows per forward pass (windows of one window row only).
        max_whole_pixels: the largest image ``auto`` predicts whole.
    """

    mode: str = "auto"
    window: int = 512
    overlap: float = 0.25
    blend: str = "gaussian"
    batch_size: int = 4
    max_whole_pixels: int = 2048 * 2048

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PixelwiseError(
                f"tiling mode must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        if self.blend not in BLENDS:
            raise PixelwiseError(
                f"tiling blend must be one of {', '.join(BLENDS)}, got {self.blend!r}"
            )
        if not _is_int(self.window) or self.window < 16:
            raise PixelwiseError(
                f"tiling window must be an integer >= 16 pixels, got {self.window!r}"
            )
        if (
            isinstance(self.overlap, bool)
            or not isinstance(self.overlap, (int, float))
            or not 0.0 <= self.overlap < 1.0
        ):
            raise PixelwiseError(
                f"tiling overlap must be a fraction with 0 <= overlap < 1, got {self.overlap!r}"
            )
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise PixelwiseError(
                f"tiling batch_size must be an integer >= 1, got {self.batch_size!r}"
            )
        if not _is_int(self.max_whole_pixels) or self.max_whole_pixels < 1:
            raise PixelwiseError(
                f"tiling max_whole_pixels must be an integer >= 1, got {self.max_whole_pixels!r}"
            )

    def use_slide(self, height: int, width: int, multiple: int = 1) -> bool:
        """Whether an image of ``height × width`` pixels is predicted in sliding windows, for a
        model that pads its input's sides to a multiple of ``multiple``: ``auto`` compares the
        *padded* size with ``max_whole_pixels`` — a 1 × 4,000,000 image that a stride-32 model pads
        to 32 rows is 128 M pixels to it, not 4 M."""
        if self.mode == "auto":
            padded_h, padded_w = padded_size(height, width, multiple)
            return padded_h * padded_w > self.max_whole_pixels
        return self.mode == "slide"


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """``(height, width)`` rounded up to multiples of ``multiple``: what a model that pads its
    input (:attr:`pixelwise.models.base.SegmentationModel.input_multiple`) computes on."""
    m = max(1, int(multiple))
    return -(-height // m) * m, -(-width // m) * m


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``: ``0, stride, 2·stride, ...`` and a last
    window aligned to the end (``length - window``), so consecutive starts differ by at most
    ``stride``; ``[0]`` when the window covers the whole length.

    Example: ``window_starts(1000, 512, 384) == [0, 384, 488]``.

    Args:
        length: the axis length, at least 1.
        window: the window length, at least 1.
        stride: the largest step between windows, ``1 <= stride <= window`` (no gaps).
    """
    if not _is_int(length) or length < 1:
        raise PixelwiseError(f"window_starts: length must be an integer >= 1, got {length!r}")
    if not _is_int(window) or window < 1:
        raise PixelwiseError(f"window_starts: window must be an integer >= 1, got {window!r}")
    if not _is_int(stride) or not 1 <= stride <= window:
        raise PixelwiseError(
            f"window_starts: stride must be an integer in [1, window={window}], got {stride!r}"
        )
    if window >= length:
        return [0]
    return [*range(0, length - window, stride), length - window]


def blend_weights(height: int, width: int, blend: str) -> torch.Tensor:
    """Per-pixel weights of one ``height × width`` window, float32, all strictly positive.

    * ``gaussian``: as nnU-Net, a separable Gaussian centred on the window with σ = 1/8 of the side
      per axis, scaled so its maximum is 1. It is evaluated at pixel centres, so it is symmetric for
      even sides too. At an edge it falls to exp(-8) ≈ 3e-4 (exp(-16) in a corner); values are
      clamped at ``MIN_WEIGHT`` = 1e-3, so where only window borders cover a pixel (the image's
      edges) their weight sum stays well away from zero, while inside the image a window's border
      still counts about a thousand times less than its neighbour's centre.
    * ``linear``: a separable tent, the product of ``min(i + 1, n - i) / ceil(n / 2)`` per axis:
      1 at the centre, falling linearly to ``1 / ceil(n / 2)`` (never 0) at the edges.
    * ``uniform``: ones (plain averaging of overlapping windows).

    Shape:
        output: (height, width).
    """
    if not _is_int(height) or not _is_int(width) or height < 1 or width < 1:
        raise PixelwiseError(f"blend_weights: window size must be >= 1, got {height!r}×{width!r}")
    if blend == "uniform":
        return torch.ones(height, width)
    if blend == "gaussian":
        rows, cols = _gaussian_1d(height), _gaussian_1d(width)
        w = torch.outer(rows, cols)
        return (w / w.max()).clamp_min(MIN_WEIGHT).float()
    if blend == "linear":
        return torch.outer(_tent_1d(height), _tent_1d(width)).float()
    raise PixelwiseError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")


def _gaussian_1d(n: int) -> torch.Tensor:
    """exp(-x² / 2σ²) at pixel centres x = i + 1/2 - n/2, σ = n / 8 (float64)."""
    x = torch.arange(n, dtype=torch.float64) + 0.5 - n / 2
    sigma = n / 8
    return torch.exp(-(x**2) / (2 * sigma**2))


def _tent_1d(n: int) -> torch.Tensor:
    """min(i + 1, n - i) / ceil(n / 2): symmetric, 1 at the centre, > 0 at the ends (float64)."""
    i = torch.arange(n, dtype=torch.float64)
    return torch.minimum(i + 1, n - i) / ((n + 1) // 2)


def _stride(window: int, overlap: float) -> int:
    return max(1, round(window * (1.0 - overlap)))


def _shift_rows_up(t: torch.Tensor, shift: int) -> None:
    """Move rows (axis -2) ``shift:`` of ``t`` to ``0:``, in place, and zero the freed tail.

    Copied in chunks of at most ``shift`` rows so source and destination never overlap."""
    n = t.shape[-2]
    for start in range(shift, n, shift):
        end = min(start + shift, n)
        t[..., start - shift : end - shift, :].copy_(t[..., start:end, :])
    t[..., max(n - shift, 0) :, :].zero_()


def _finished(
    acc: torch.Tensor, wsum: torch.Tensor, y0: int, rows: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """The first ``rows`` rows of the band starting at image row ``y0``, blended (``Σ w·logit / Σ w``),
    as new tensors of at most about ``BLOCK_FLOATS`` floats each (at least one row)."""
    step = max(1, BLOCK_FLOATS // (acc.shape[0] * acc.shape[2]))
    for r in range(0, rows, step):
        end = min(r + step, rows)
        yield y0 + r, acc[:, r:end] / wsum[r:end]


def _check_inputs(image: np.ndarray, channels: int) -> tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or 0 in image.shape[:2]:
        shape = getattr(image, "shape", None)
        raise PixelwiseError(
            f"sliding-window inference needs an H×W×C (or H×W) image array, got shape {shape}"
        )
    if not _is_int(channels) or channels < 1:
        raise PixelwiseError(
            f"sliding-window inference: channels must be an integer >= 1, got {channels!r}"
        )
    return int(image.shape[0]), int(image.shape[1])


def slide_rows(
    image: np.ndarray,
    preprocess: Preprocess,
    window_logits: WindowLogits,
    channels: int,
    config: TileConfig,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Blended sliding-window logits of ``image``, streamed as bands of rows, top to bottom.

    Windows of one window row are run ``config.batch_size`` at a time; each window's logits are
    added, weighted by :func:`blend_weights`, to an accumulator covering only the rows the current
    window row touches (``min(window, H)`` rows). Before the next window row starts, the rows above
    it are finished: they are divided by their weight sums, yielded, and the accumulator is shifted
    up. Finished rows are yielded in blocks of at most about ``BLOCK_FLOATS`` (32 MiB of float32).
    Peak memory is about ``(K + 1) · window · W`` floats for the accumulator, plus one batch of
    windows and the block being yielded — never the whole image's logits.

    Args:
        image: H×W×C (or H×W) uint8 image; a ``np.memmap`` is read one window at a time.
        preprocess: h×w×C uint8 crop → C×h×w float32 tensor (normalisation).
        window_logits: N×C×h×w batch → N×K×h×w float32 logits (on any device; moved to the CPU).
        channels: K, the number of logit channels ``window_logits`` returns.
        config: window size, overlap, blend and batch size (its ``mode`` is the caller's business:
            this function always slides).

    Yields:
        ``(y0, block)``: ``block`` holds the blended logits of image rows ``y0 : y0 + rows``, a new
        float32 CPU tensor the caller may keep. The blocks cover every row exactly once, in order.

    Shape:
        block: (K, rows, W), rows <= min(window, H) and rows <= max(1, BLOCK_FLOATS // (K · W)).
    """
    height, width = _check_inputs(image, channels)
    win_h, win_w = min(config.window, height), min(config.window, width)
    ys = window_starts(height, win_h, _stride(win_h, config.overlap))
    xs = window_starts(width, win_w, _stride(win_w, config.overlap))
    weights = blend_weights(win_h, win_w, config.blend)
    acc = torch.zeros(channels, win_h, width)  # rows band0 : band0 + win_h of the image
    wsum = torch.zeros(win_h, width)
    band0 = 0
    for y in ys:
        shift = y - band0
        if shift > 0:  # rows band0 : y are touched by no later window
            yield from _finished(acc, wsum, band0, shift)
            _shift_rows_up(acc, shift)
            _shift_rows_up(wsum, shift)
            band0 = y
        for i in range(0, len(xs), config.batch_size):
            chunk = xs[i : i + config.batch_size]
            batch = torch.stack(
                [
                    preprocess(np.ascontiguousarray(image[y : y + win_h, x : x + win_w]))
                    for x in chunk
                ]
            )
            out = window_logits(batch)
            expected = (len(chunk), channels, win_h, win_w)
            if tuple(out.shape) != expected:
                raise PixelwiseError(
                    f"window_logits returned logits of shape {tuple(out.shape)}, expected {expected} "
                    f"(N, K={channels}, h, w) for a batch of shape {tuple(batch.shape)}"
                )
            out = out.detach().float().cpu()
            for j, x in enumerate(chunk):
                acc[:, :, x : x + win_w].addcmul_(out[j], weights)
                wsum[:, x : x + win_w].add_(weights)
    yield from _finished(acc, wsum, band0, height - band0)


def slide_logits(
    image: np.ndarray,
    preprocess: Preprocess,
    window_logits: WindowLogits,
    channels: int,
    config: TileConfig,
) -> torch.Tensor:
    """The blended sliding-window logits of a whole image (see :func:`slide_rows`), for images
    whose K×H×W logits fit in memory.

    Shape:
        output: (K, H, W) float32 on the CPU.
    """
    height, width = _check_inputs(image, channels)
    out = torch.empty(channels, height, width)
    for y0, block in slide_rows(image, preprocess, window_logits, channels, config):
        out[:, y0 : y0 + block.shape[1]] = block
    return out


def slide_labels(
    image: np.ndarray,
    preprocess: Preprocess,
    window_logits: WindowLogits,
    channels: int,
    config: TileConfig,
    to_labels: Callable[[torch.Tensor], torch.Tensor],
) -> np.ndarray:
    """Class labels of an image of any size, predicted in sliding windows; each band of blended
    logits from :func:`slide_rows` is turned into labels as soon as it is finished, so memory stays
    bounded by the band, not the image.

    Args:
        image, preprocess, window_logits, channels, config: as for :func:`slide_rows`.
        to_labels: K×rows×W logits → rows×W integer labels in [0, 255] (e.g. ``argmax(0)``, or a
            sigmoid threshold for K = 1).

    Shape:
        output: (H, W) uint8.
    """
    height, width = _check_inputs(image, channels)
    labels = np.empty((height, width), np.uint8)
    for y0, block in slide_rows(image, preprocess, window_logits, channels, config):
        rows = block.shape[1]
        lab = to_labels(block)
        if tuple(lab.shape) != (rows, width):
            raise PixelwiseError(
                f"to_labels returned shape {tuple(lab.shape)} for logits of shape "
                f"{tuple(block.shape)}; expected (rows, W) = {(rows, width)}"
            )
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) > 255):
            raise PixelwiseError(
                f"to_labels returned labels in [{int(lab.min())}, {int(lab.max())}]; uint8 label "
                "maps hold 0..255"
            )
        labels[y0 : y0 + rows] = lab.cpu().numpy()
    return labels
