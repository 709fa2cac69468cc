"""What the dense CRF does to a trained model's scores: parameters tuned on one split, effect measured on
another, and a figure (image, raw mask, refined mask).

    python bench/crf_quality.py --model runs/camvid_unet/best.ckpt --data configs/data/camvid.yaml \
        --tune-split val --test-split test --figure docs/crf_camvid.png

The model's logits are computed once per image (float32 eval) and kept in memory as float16; every CRF
setting then runs on the same logits. The grid varies the appearance (bilateral) kernel — its weight,
spatial width and colour width — with the smoothness kernel fixed at DeepLab's (weight 3, width 3) and 10
mean-field iterations, as DeepLab v1 cross-validated it. Prints a markdown report (quality only: CRF
timings are bench/crf_vs_pydensecrf.py's).
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pixelwise.crf import CRFParams, DenseCRF
from pixelwise.data import load_dataset_spec, load_pair, resolve_split
from pixelwise.data.classes import IGNORE_INDEX
from pixelwise.engine import Segmenter
from pixelwise.engine.visualize import mask_image
from pixelwise.metrics import ConfusionMatrix


def cache_logits(seg: Segmenter, spec, split: str):  # noqa: ANN001, ANN201
    """(image, mask, logits float16) for every sample of ``split``."""
    samples, problems = resolve_split(spec, split)
    if problems:
        raise SystemExit(f"split {split}: {problems[0]}")
    out = []
    for s in samples:
        image, mask = load_pair(s, spec)
        logits = seg.logits(seg.preprocess(image)[None])[0]
        out.append((image, mask, logits.to(torch.float16).numpy()))
    return out


def miou(items, num_classes: int, params: CRFParams | None) -> tuple[float, np.ndarray]:  # noqa: ANN001
    """mIoU and per-class IoU with ``params`` (``None``: no CRF)."""
    cm = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
    crf = DenseCRF(params) if params is not None else None
    for image, mask, logits in items:
        lg = torch.from_numpy(logits.astype(np.float32))
        if crf is None:
            labels = lg.argmax(0)
        else:
            labels = torch.as_tensor(crf(image, logits=lg.numpy()).labels)
        cm.update(labels, torch.from_numpy(mask))
    sc = cm.scores()
    return sc.miou, sc.iou


def figure(item, params: CRFParams, colors, path: Path) -> None:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, mask, logits = item
    lg = logits.astype(np.float32)
    raw = lg.argmax(0).astype(np.uint8)
    refined = np.asarray(DenseCRF(params)(image, logits=lg).labels).astype(np.uint8)
    gt = mask.copy()
    gt[gt == IGNORE_INDEX] = 0
    panels = [
        ("image", image if image.shape[-1] == 3 else image[..., 0]),
        ("ground truth", np.asarray(mask_image(gt, colors).convert("RGB"))),
        ("model (argmax)", np.asarray(mask_image(raw, colors).convert("RGB"))),
        ("model + dense CRF", np.asarray(mask_image(refined, colors).convert("RGB"))),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (title, im) in zip(axes, panels, strict=True):
        ax.imshow(im, cmap="gray" if im.ndim == 2 else None)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--tune-split", default="val")
    ap.add_argument("--test-split", default="test")
    ap.add_argument("--weights", type=float, nargs="+", default=[3.0, 5.0])
    ap.add_argument("--sxy", type=float, nargs="+", default=[30.0, 60.0, 121.0])
    ap.add_argument("--srgb", type=float, nargs="+", default=[3.0, 5.0, 10.0])
    ap.add_argument("--figure", type=Path)
    ap.add_argument("--figure-index", type=int, default=0)
    args = ap.parse_args(argv)

    seg = Segmenter.from_checkpoint(args.model, device="cpu", crf=False)
    spec = load_dataset_spec(args.data)
    k = spec.num_classes
    names = spec.class_names
    print(f"# Dense CRF on {spec.name}: `{args.model}`\n")
    print(f"    python bench/crf_quality.py {' '.join(sys.argv[1:] if argv is None else argv)}\n")
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}.\n"
    )
    tune = cache_logits(seg, spec, args.tune_split)
    base, _ = miou(tune, k, None)
    default = CRFParams()
    rows = []
    for w, sxy, srgb in itertools.product(args.weights, args.sxy, args.srgb):
        p = replace(default, bilateral_weight=w, bilateral_sxy=sxy, bilateral_srgb=srgb)
        m, _ = miou(tune, k, p)
        rows.append((m, w, sxy, srgb))
    rows.sort(reverse=True)
    best = replace(
        default, bilateral_weight=rows[0][1], bilateral_sxy=rows[0][2], bilateral_srgb=rows[0][3]
    )
    print(
        f"## Tuning on `{args.tune_split}` ({len(tune)} images): mIoU without CRF "
        f"{100 * base:.2f}%\n"
    )
    print("| bilateral weight | sxy | srgb | mIoU % | Δ vs no CRF |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for m, w, sxy, srgb in rows:
        print(f"| {w:g} | {sxy:g} | {srgb:g} | {100 * m:.2f} | {100 * (m - base):+.2f} |")
    del tune
    test = cache_logits(seg, spec, args.test_split)
    print(f"\n## `{args.test_split}` ({len(test)} images)\n")
    print("| setting | mIoU % | " + " | ".join(names) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in names) + " |")
    for label, p in (
        ("no CRF", None),
        ("CRF, DeepLab v1 defaults (w 4, sxy 121, srgb 5)", default),
        (
            f"CRF, tuned on {args.tune_split} (w {best.bilateral_weight:g}, sxy "
            f"{best.bilateral_sxy:g}, srgb {best.bilateral_srgb:g})",
            best,
        ),
    ):
        m, iou = miou(test, k, p)
        cells = " | ".join("—" if np.isnan(v) else f"{100 * v:.1f}" for v in iou)
        print(f"| {label} | **{100 * m:.2f}** | {cells} |", flush=True)
    if args.figure:
        figure(test[args.figure_index], best, spec.colors, args.figure)
        print(f"\nFigure: `{args.figure}` (image {args.figure_index} of `{args.test_split}`).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
