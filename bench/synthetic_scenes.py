"""The bundled ``camvid`` model on generated road scenes (:mod:`pixelwise.data.synthetic`).

Renders ``--scenes`` streets (seeds 1..N) at CamVid's 360×480 with their exact labels, segments
each through the one prediction path (``Segmenter.segment``) and scores them with one
``ConfusionMatrix``: mIoU, pixel accuracy, per-class IoU. Synthetic pictures, not CamVid frames:
the number says how far the model carries over to a clean, simplified street. Writes the JSON to
``--out`` (default ``docs/results/synthetic_scenes.json``) and prints a table.

    python bench/synthetic_scenes.py --scenes 20
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from pixelwise import ConfusionMatrix
from pixelwise._atomic import write_text_atomic
from pixelwise.data.synthetic import ROAD_SCENE_CLASSES, ROAD_SCENE_LICENSE, road_scene
from pixelwise.engine.demo import load_demo_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="camvid")
    ap.add_argument("--scenes", type=int, default=20, help="streets, seeds 1..N")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "synthetic_scenes.json")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    seg, _ = load_demo_model(args.model, device=args.device)
    names = seg.meta.class_names
    cm = ConfusionMatrix(len(names))
    render = predict = 0.0
    for seed in range(1, args.scenes + 1):
        t0 = time.perf_counter()
        scene = road_scene(seed)
        t1 = time.perf_counter()
        labels = seg.segment(scene.image).labels
        t2 = time.perf_counter()
        render, predict = render + t1 - t0, predict + t2 - t1
        cm.update(torch.from_numpy(labels), torch.from_numpy(scene.labels))
    s = cm.scores()
    share = s.support / max(1, int(s.support.sum()))
    report = {
        "what": "the bundled model on generated road scenes (synthetic; exact labels)",
        "command": f"python bench/synthetic_scenes.py --scenes {args.scenes} --model {args.model}",
        "model": args.model,
        "scenes": args.scenes,
        "seeds": [1, args.scenes],
        "size": [360, 480],
        "generator": "pixelwise.data.synthetic.road_scene",
        "licence": ROAD_SCENE_LICENSE,
        "miou": round(s.miou, 6),
        "pixel_accuracy": round(s.pixel_accuracy, 6),
        "iou": {
            n: None if math.isnan(v) else round(float(v), 6)
            for n, v in zip(names, s.iou, strict=True)
        },
        "label_share": {n: round(float(f), 6) for n, f in zip(names, share, strict=True)},
        "seconds_per_scene": {
            "render": round(render / args.scenes, 3),
            "predict": round(predict / args.scenes, 3),
        },
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    if list(names) != list(ROAD_SCENE_CLASSES):
        report["note"] = "the model's class names differ from CamVid's: scored in its order"
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(
        f"{args.scenes} generated road scenes, model {args.model}: mIoU {100 * s.miou:.2f}%  "
        f"pixel acc {100 * s.pixel_accuracy:.2f}%"
    )
    print("| class | IoU % | share of pixels % |\n| --- | ---: | ---: |")
    for n, v, f in zip(names, s.iou, share, strict=True):
        iou = "—" if math.isnan(v) else f"{100 * v:.1f}"
        print(f"| {n} | {iou} | {100 * f:.2f} |")
    print(f"render {render / args.scenes:.2f} s, predict {predict / args.scenes:.2f} s per scene")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
