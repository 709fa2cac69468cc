"""Pictures: coloured masks, overlays with a legend, confusion matrices, training curves."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .._atomic import atomic_path
from ..data.classes import palette_bytes

__all__ = ["mask_image", "overlay_with_legend", "plot_confusion", "plot_curves"]


def mask_image(labels: np.ndarray, colors: Sequence[Sequence[int]]) -> Image.Image:
    """A palette PNG image whose pixel values are the class indices and whose palette the colours."""
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(palette_bytes(colors))
    return im


def overlay_with_legend(
    image: np.ndarray,
    labels: np.ndarray,
    colors: Sequence[Sequence[int]],
    names: Sequence[str],
    *,
    alpha: float = 0.5,
) -> Image.Image:
    """The image blended with the class colours, and a legend of the classes present with their area."""
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image[..., :1], 3, axis=2)
    lut = np.zeros((256, 3), dtype=np.float32)
    lut[: len(colors)] = np.asarray(colors, dtype=np.float32)
    blend = (1 - alpha) * rgb.astype(np.float32) + alpha * lut[labels]
    base = Image.fromarray(blend.clip(0, 255).astype(np.uint8))
    counts = np.bincount(labels.reshape(-1), minlength=len(names))[: len(names)]
    present = [i for i in np.argsort(-counts) if counts[i] > 0]
    h, w = labels.shape
    font_size = max(10, min(18, h // 20))
    font = ImageFont.load_default(size=font_size)
    row = font_size + 6
    legend_w = max(140, font_size * 12)
    canvas = Image.new("RGB", (w + legend_w, max(h, row * (len(present) + 1))), (255, 255, 255))
    canvas.paste(base, (0, 0))
    draw = ImageDraw.Draw(canvas)
    total = max(1, int(counts.sum()))
    for k, i in enumerate(present):
        y = 4 + k * row
        draw.rectangle(
            [w + 6, y, w + 6 + font_size, y + font_size], fill=tuple(colors[i]), outline=(0, 0, 0)
        )
        draw.text(
            (w + 12 + font_size, y),
            f"{names[i]} {100 * counts[i] / total:.1f}%",
            fill=(0, 0, 0),
            font=font,
        )
    return canvas


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
