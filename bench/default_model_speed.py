"""Speed of the bundled default model through ``pixelwise predict``'s path, on real CamVid frames.

Three parts per image, timed separately, batch 1, on this machine's CPU threads:

- *decode*: ``pixelwise.data.io.read_image`` of the 360×480 PNG;
- *model path*: ``Segmenter.segment`` — normalisation, padding to the stride, the forward pass,
  cropping back, class decision, the uint8 label map on the host (what ``predict`` calls);
- *write*: ``pixelwise.data.io.write_png`` of the palette mask.

Then the model path split into its stages on the same frames (normalisation to a tensor, the
forward pass with its float32 logits, the class decision with the uint8 map on the host), and two
measurements behind choices made for the CPU: the forward pass per image at batch 1 and
batch 4 (``--batch-sizes``; why ``pixelwise serve`` does not batch on the CPU), and the class
decision on 4×K×H×W logits by ``argmax(dim=1)`` against ``max(dim=1).indices`` (what
``pixelwise.outputs.labels`` uses).

    python bench/default_model_speed.py                      # the bundled camvid model, 60 test frames
    python bench/default_model_speed.py --model runs/x/best.ckpt --images 20

Markdown on stdout: median and mean milliseconds and images per second of each part.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from timing import median_seconds, run_line, timed

import pixelwise
from pixelwise.data.io import read_image, write_png
from pixelwise.engine.visualize import mask_image

REPO = Path(__file__).resolve().parents[1]

CAMVID_TEST = REPO.parent / "shared/data/camvid/test"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="camvid")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--amp", default="model", help="autocast: model (the bundle's checked one), off, bf16, auto"
    )
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per batch size")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = sorted(p for p in CAMVID_TEST.glob("*.png"))[: args.images]
    if not paths:
        raise SystemExit(f"{CAMVID_TEST}: no CamVid test images")
    seg = pixelwise.load(args.model, amp=args.amp)
    colors = seg.meta.colors
    for p in paths[: args.warmup]:
        seg.segment(read_image(p))
    times: dict[str, list[float]] = {"decode": [], "model path": [], "write": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, p in enumerate(paths):
            with timed(times["decode"]):
                image = read_image(p)
            with timed(times["model path"]):
                labels = seg.segment(image).labels
            with timed(times["write"]):
                write_png(Path(tmp) / f"{i}.png", mask_image(labels, colors))
    print("# Default model speed\n")
    print(f"    python bench/{Path(__file__).name} " + " ".join(sys.argv[1:]) + "\n")
    print(
        f"{run_line()} Model `{args.model}` ({seg.meta.arch}), amp {args.amp} (runs as "
        f"{seg.amp}); {len(paths)} CamVid test frames at {image.shape[0]}×{image.shape[1]}, "
        f"batch 1, after {args.warmup} warm-up images.\n"
    )
    print("| part | median ms | mean ms | images/s (from the median) |")
    print("| --- | ---: | ---: | ---: |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {1000 * med:.1f} | {1000 * statistics.mean(ts):.1f} | {1 / med:.1f} |")
    total = sum(statistics.median(ts) for ts in times.values())
    print(f"| all three | {1000 * total:.1f} | | {1 / total:.1f} |")

    stages: dict[str, list[float]] = {"normalise": [], "forward": [], "decision": []}
    with torch.inference_mode():
        for p in paths:
            image = read_image(p)
            with timed(stages["normalise"]):
                x = seg.preprocess(image)[None]
            with timed(stages["forward"]):
                logits = seg.logits(x)
            with timed(stages["decision"]):
                seg.labels(logits)[0].to(torch.uint8).cpu().numpy()
    print("\nThe model path by stage (same frames, batch 1):\n")
    print("| stage | median ms | mean ms |")
    print("| --- | ---: | ---: |")
    for name, ts in stages.items():
        print(f"| {name} | {1000 * statistics.median(ts):.1f} | {1000 * statistics.mean(ts):.1f} |")

    h, w = image.shape[:2]
    x1 = seg.preprocess(image)[None]
    print("\nForward pass only (`Segmenter.logits`, the memory format the segmenter uses):\n")
    print("| batch | median ms per batch | ms per image | images/s |")
    print("| ---: | ---: | ---: | ---: |")
    with torch.inference_mode():
        for b in args.batch_sizes:
            x = x1.expand(b, -1, -1, -1).contiguous()
            med = median_seconds(lambda x=x: seg.logits(x), args.repeats)
            print(f"| {b} | {1000 * med:.1f} | {1000 * med / b:.1f} | {b / med:.1f} |")
        logits = seg.logits(x1.expand(4, -1, -1, -1).contiguous())
        k = logits.shape[1]
        print(f"\nClass decision on 4×{k}×{h}×{w} float32 logits (contiguous):\n")
        print("| operation | median ms |")
        print("| --- | ---: |")
        for name, fn in (
            ("`argmax(dim=1)`", lambda: logits.argmax(dim=1)),
            ("`max(dim=1).indices`", lambda: logits.max(dim=1).indices),
        ):
            print(f"| {name} | {1000 * median_seconds(fn, args.repeats):.1f} |")


if __name__ == "__main__":
    main()
