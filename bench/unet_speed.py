"""U-Net training and inference speed on this machine, float32 vs bfloat16 autocast.

    python bench/unet_speed.py [--widths 16 32 64] [--device cpu]

Prints a markdown table (images/second): one training step (forward, loss, backward, AdamW) on batches of
8 random 256×256 crops, and inference on batches of 4 CamVid-size 360×480 images. Median of the timed
repeats after one warm-up.
"""

from __future__ import annotations

import argparse
import platform
from functools import partial

import torch
from timing import median_seconds

import pixelwise as pw
from pixelwise.losses import cross_entropy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _train_step(model, opt, x, y, dtype) -> None:  # noqa: ANN001
    model.train()
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(x)
    loss = cross_entropy(out, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    _sync(x.device)


@torch.no_grad()
def _infer(model, x, dtype) -> None:  # noqa: ANN001
    model.eval()
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        model(x)
    _sync(x.device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {dev}\n"
    )
    print(
        "| U-Net base_channels | params (M) | precision | train img/s (8×256²) | inference img/s (4×360×480) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for width in args.widths:
        torch.manual_seed(0)
        model = pw.create_model("unet", num_classes=11, base_channels=width).to(dev)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        opt = torch.optim.AdamW(model.parameters(), 1e-4)
        x = torch.randn(8, 3, 256, 256, device=dev)
        y = torch.randint(0, 11, (8, 256, 256), device=dev)
        xe = torch.randn(4, 3, 360, 480, device=dev)
        for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            tt = median_seconds(partial(_train_step, model, opt, x, y, dtype), args.repeats)
            ti = median_seconds(partial(_infer, model, xe, dtype), args.repeats)
            print(f"| {width} | {params:.1f} | {name} | {8 / tt:.1f} | {4 / ti:.1f} |", flush=True)


if __name__ == "__main__":
    main()
