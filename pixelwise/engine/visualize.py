"""Pictures: coloured masks, overlays with a legend, confusion matrices, training curves."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .._atomic import atomic_path
from ..data.classes import palette_bytes

__all__ = [
    "blend",
    "class_areas",
    "draw_legend",
    "mask_image",
    "overlay_with_inset_legend",
    "overlay_with_legend",
    "plot_confusion",
    "plot_curves",
]


def mask_image(labels: np.ndarray, colors: Sequence[Sequence[int]]) -> Image.Image:
    """A palette PNG image whose pixel values are the class indices and whose palette the colours."""
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(palette_bytes(colors))
    return im


def blend(
    image: np.ndarray, labels: np.ndarray, colors: Sequence[Sequence[int]], *, alpha: float = 0.5
) -> np.ndarray:
    """The image (H×W×3, or H×W×1 shown as grey) blended with its pixels' class colours:
    ``(1 - alpha) · image + alpha · colour``, H×W×3 uint8."""
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image[..., :1], 3, axis=2)
    lut = np.zeros((256, 3), dtype=np.float32)
    lut[: len(colors)] = np.asarray(colors, dtype=np.float32)
    out = (1 - alpha) * rgb.astype(np.float32) + alpha * lut[labels]
    return out.clip(0, 255).astype(np.uint8)


def class_areas(labels: np.ndarray, num_classes: int) -> list[tuple[int, float]]:
    """The classes present in ``labels`` with the fraction of the pixels each covers, largest
    first: a legend's rows."""
    counts = np.bincount(labels.reshape(-1), minlength=num_classes)[:num_classes]
    total = max(1, int(counts.sum()))
    return [(int(i), counts[i] / total) for i in np.argsort(-counts) if counts[i] > 0]


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def legend_font_size(height: int) -> int:
    """The legend's font size for a picture ``height`` pixels tall (10 to 18)."""
    return max(10, min(18, height // 20))


def draw_legend(
    draw: ImageDraw.ImageDraw,
    origin: tuple[int, int],
    rows: Sequence[tuple[int, float]],
    colors: Sequence[Sequence[int]],
    names: Sequence[str],
    font_size: int,
) -> None:
    """One row per ``(class, area fraction)`` from ``origin`` (x, y) down: a colour swatch, the
    class name and its area in percent."""
    font = _font(font_size)
    x, y0 = origin
    for k, (i, fraction) in enumerate(rows):
        y = y0 + k * (font_size + 6)
        draw.rectangle(
            [x, y, x + font_size, y + font_size], fill=tuple(colors[i]), outline=(0, 0, 0)
        )
        draw.text(
            (x + 6 + font_size, y), f"{names[i]} {100 * fraction:.1f}%", fill=(0, 0, 0), font=font
        )


def overlay_with_legend(
    image: np.ndarray,
    labels: np.ndarray,
    colors: Sequence[Sequence[int]],
    names: Sequence[str],
    *,
    alpha: float = 0.5,
) -> Image.Image:
    """The image blended with the class colours, and a legend of the classes present with their area."""
    base = Image.fromarray(blend(image, labels, colors, alpha=alpha))
    rows = class_areas(labels, len(names))
    h, w = labels.shape
    font_size = legend_font_size(h)
    row = font_size + 6
    legend_w = max(140, font_size * 12)
    canvas = Image.new("RGB", (w + legend_w, max(h, row * (len(rows) + 1))), (255, 255, 255))
    canvas.paste(base, (0, 0))
    draw_legend(ImageDraw.Draw(canvas), (w + 6, 4), rows, colors, names, font_size)
    return canvas


def overlay_with_inset_legend(
    image: np.ndarray,
    labels: np.ndarray,
    colors: Sequence[Sequence[int]],
    names: Sequence[str],
    *,
    alpha: float = 0.5,
) -> np.ndarray:
    """The image blended with the class colours at its own size (H×W×3 uint8), with the legend
    inset at the top left on a lightened box: a video's frame, whose size cannot change. The rows
    are the largest classes that fit in the frame, listed in class order so that they stay put
    from frame to frame."""
    out = blend(image, labels, colors, alpha=alpha)
    h, w = labels.shape
    font_size = max(10, min(14, h // 30))
    row = font_size + 6
    rows = sorted(class_areas(labels, len(names))[: max(0, (h - 8) // row)])
    if not rows:
        return out
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    font = _font(font_size)
    text_w = max(draw.textlength(f"{names[i]} {100 * f:.1f}%", font=font) for i, f in rows)
    x1, y1 = min(w, int(16 + font_size + text_w)), min(h, 6 + row * len(rows))
    box = np.asarray(canvas)[:y1, :x1].astype(np.float32)
    canvas.paste(Image.fromarray((0.35 * box + 0.65 * 255).astype(np.uint8)), (0, 0))
    draw_legend(draw, (4, 4), rows, colors, names, font_size)
    return np.asarray(canvas)


def _save_fig(fig, path: str | os.PathLike[str]) -> None:  # noqa: ANN001
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: str | os.PathLike[str]) -> None:
    """Row-normalised confusion matrix (ground truth rows, predictions columns) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix.astype(np.float64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * n, 1.0 + 0.5 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.005:
                ax.text(
                    j,
                    i,
                    f"{100 * norm[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_title("confusion matrix (% of ground-truth pixels)")
    _save_fig(fig, path)
    plt.close(fig)


def plot_curves(rows: list[dict], path: str | os.PathLike[str]) -> None:
    """Training loss, learning rate and validation mIoU per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(ep, [r["train_loss"] for r in rows], marker=".")
    axes[0].set_title("training loss")
    axes[1].plot(ep, [r["lr"] for r in rows], marker=".")
    axes[1].set_title("learning rate (end of epoch)")
    val = [(r["epoch"], r["val_miou"]) for r in rows if r.get("val_miou") not in (None, "")]
    if val:
        axes[2].plot([v[0] for v in val], [100 * float(v[1]) for v in val], marker="o")
    axes[2].set_title("validation mIoU (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    _save_fig(fig, path)
    plt.close(fig)
