"""Recipe sweep for the default CamVid model: many short trainings at once on one lent GPU.

How the bundled ``camvid`` model's architecture was chosen (docs/models/camvid.md, "How the recipe
was chosen"). Each candidate is the default recipe (configs/models/camvid.yaml: 40 epochs, 384 crops,
scale 0.5–1.75, CE + Dice, AdamW poly) with one thing changed, trained on CamVid **train** (367 images)
and selected by its **val** mIoU (101 images, every 4–5 epochs); the test mIoU of these train-only
models is recorded for information only. The winner is then trained on train+val on the 2-core CPU
and scored once on test.

The lent GPU machine takes at most 64 MiB of files, so ``prepare`` writes a transport copy: CamVid's
images re-encoded as JPEG (quality 90; masks unchanged, lossless PNG) and the Lite0/Lite1 ImageNet
encoder weights as float16 safetensors in timm's layout. Both the JPEG round trip and the bf16
autocast used on the GPU make these figures indicative, not comparable digit for digit with CPU runs.

    python bench/recipe_sweep.py prepare --out .gpu            # here (needs ../shared/data/camvid)
    python bench/recipe_sweep.py run --set 1 --out $OUT        # there: 9 runs at once, ~6 min on an H100
    python bench/recipe_sweep.py run --set 2 --out $OUT        # 7 DeepLab v3+ variants, ~5 min
    python bench/recipe_sweep.py table docs/models/results/sweep_set1.json docs/models/results/sweep_set2.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def prepare(out: Path, data: Path) -> None:
    from PIL import Image
    from safetensors.torch import save_file

    from pixelwise.encoders.factory import create_encoder

    dst = out / "camvid"
    for split in ("train", "val", "test"):
        lines = []
        for line in (data / f"{split}.txt").read_text().splitlines():
            if not line.strip():
                continue
            img, ann = line.split()
            jpg = img.rsplit(".", 1)[0] + ".jpg"
            (dst / jpg).parent.mkdir(parents=True, exist_ok=True)
            (dst / ann).parent.mkdir(parents=True, exist_ok=True)
            Image.open(data / img).convert("RGB").save(dst / jpg, "JPEG", quality=90)
            shutil.copyfile(data / ann, dst / ann)
            lines.append(f"{jpg} {ann}")
        (dst / f"{split}.txt").write_text("\n".join(lines) + "\n")
    spec = yaml.safe_load((ROOT / "configs/data/camvid.yaml").read_text())
    spec["root"] = "camvid"
    (out / "camvid.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for i in (0, 1):
        enc = create_encoder(f"tf_efficientnet_lite{i}", weights="imagenet")
        sd = {f"encoder.{k}": v.half().contiguous() for k, v in enc.state_dict().items()}
        save_file(
            {k: v for k, v in sd.items() if v.is_floating_point()},
            str(out / f"lite{i}.safetensors"),
        )
    print(f"wrote {out}")


def candidates(which: str, payload: Path) -> dict[str, dict]:
    base = yaml.safe_load((ROOT / "configs/models/camvid.yaml").read_text())
    base["data"] = {
        "dataset": str(payload / "camvid.yaml"),
        "train_split": "train",
        "val_split": "val",
    }
    base["train"].update(amp="bf16", num_workers=3, eval_batch_size=8, val_every=5, device="auto")

    def run(
        model: str = "fcn8s", enc: int = 0, os_: int = 32, mp: dict | None = None, **kw: object
    ) -> dict:
        c = copy.deepcopy(base)
        weights = str(payload / f"lite{enc}.safetensors")
        params = {
            "encoder": f"tf_efficientnet_lite{enc}",
            "encoder_weights": weights,
            "output_stride": os_,
        }
        c["model"] = {"name": model, "params": {**params, **(mp or {})}}
        for k, v in kw.items():
            section, key = k.split("__")
            c[section][key] = v
        return c

    D = "deeplabv3plus"
    if which == "1":  # one change each from the FCN-8s/Lite0 recipe of the first default model
        return {
            "fcn8s_l0": run(),
            "fcn8s_l0_seed1": run(train__seed=1),
            "fcn8s_l0_mfw": run(loss__class_weights="median_frequency"),
            "fcn8s_l0_frame": run(augment__crop_size=[360, 480]),
            "unet_l0": run("unet_encoder"),
            "dlv3p_l0": run(D, os_=16),
            "fcn8s_l1": run(enc=1),
            "unet_l1": run("unet_encoder", enc=1),
            "dlv3p_l1": run(D, enc=1, os_=16),
        }
    # set 2: DeepLab v3+/Lite0 variants cheap enough for the CPU (speed and training time)
    runs = {
        "dlv3p_l0_128": run(D, os_=16, mp={"aspp_channels": 128}),
        "dlv3p_l0_128_e32": run(D, os_=16, mp={"aspp_channels": 128}, train__epochs=32),
        "dlv3p_l0_128_seed1": run(D, os_=16, mp={"aspp_channels": 128}, train__seed=1),
        "dlv3p_l0_sep": run(D, os_=16, mp={"separable": True}),
        "dlv3p_l0_sep_e28": run(D, os_=16, mp={"separable": True}, train__epochs=28),
        "dlv3p_l0_sep128": run(D, os_=16, mp={"separable": True, "aspp_channels": 128}),
        "dlv3p_l0_seed1": run(D, os_=16, train__seed=1),
    }
    for c in runs.values():
        c["train"]["val_every"] = 4
    return runs


def sweep(which: str, out: Path, payload: Path, limit: float, smoke: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("SWEEP_WORK", "/tmp/sweep"))
    work.mkdir(parents=True, exist_ok=True)
    runs = candidates(which, payload)
    if smoke:  # two runs, two steps each, on whatever device is there
        runs = dict(list(runs.items())[:2])
        for c in runs.values():
            c["train"].update(epochs=1, max_steps=2, val_every=1, amp="off", num_workers=0)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    py = [sys.executable, "-m", "pixelwise"]
    procs, t0, ended = {}, time.time(), {}
    for name, cfg in runs.items():
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        procs[name] = subprocess.Popen(
            [*py, "train", str(path), "--out", str(work / name)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    while len(ended) < len(procs) and time.time() - t0 < limit:
        for name, p in procs.items():
            if name not in ended and p.poll() is not None:
                ended[name] = time.time() - t0
                print(f"{name} done rc={p.returncode} {ended[name]:.0f}s", flush=True)
        time.sleep(2)
    for name, p in procs.items():
        if p.poll() is None:
            p.kill()
            print(
                f"{name} killed at the {limit:.0f} s limit (not finished: its scores are partial)",
                flush=True,
            )
    evals = {}
    for name in runs:
        ckpt = work / name / "best.ckpt"
        if ckpt.is_file():
            cmd = [
                *py,
                "evaluate",
                "--model",
                str(ckpt),
                "--data",
                str(payload / "camvid.yaml"),
                "--split",
                "test",
                "--out",
                str(work / f"{name}_test.json"),
            ]
            evals[name] = subprocess.Popen(
                cmd,
                stdout=open(work / f"{name}_eval.log", "w"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                env=env,
            )
    for p in evals.values():
        p.wait(timeout=300)
    summary = {}
    for name, cfg in runs.items():
        metrics = work / name / "metrics.csv"
        test = work / f"{name}_test.json"
        summary[name] = {
            "model": cfg["model"],
            "epochs": cfg["train"]["epochs"],
            "seed": cfg["train"]["seed"],
            "train_seconds": ended.get(name),
            "finished": name in ended,
            "metrics_csv": metrics.read_text() if metrics.is_file() else None,
            "test": json.loads(test.read_text()) if test.is_file() else None,
            "log_tail": (work / f"{name}.log").read_text()[-1500:],
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(table([out / "summary.json"]))


COST = {  # name → (architecture, params), random weights: speed does not depend on them
    "fcn8s_l0": ("fcn8s", {"encoder": "tf_efficientnet_lite0", "output_stride": 32}),
    "dlv3p_l0": ("deeplabv3plus", {"encoder": "tf_efficientnet_lite0", "output_stride": 16}),
    "dlv3p_l0_sep": (
        "deeplabv3plus",
        {"encoder": "tf_efficientnet_lite0", "output_stride": 16, "separable": True},
    ),
    "dlv3p_l0_128": (
        "deeplabv3plus",
        {"encoder": "tf_efficientnet_lite0", "output_stride": 16, "aspp_channels": 128},
    ),
    "dlv3p_l0_sep128": (
        "deeplabv3plus",
        {
            "encoder": "tf_efficientnet_lite0",
            "output_stride": 16,
            "separable": True,
            "aspp_channels": 128,
        },
    ),
    "dlv3p_l1": ("deeplabv3plus", {"encoder": "tf_efficientnet_lite1", "output_stride": 16}),
}


def cost(threads: int | None) -> None:
    """Per candidate, on this CPU: the bare forward of one 360×480 image (eval, channels_last, fp32,
    median of 15) and one training step at the recipe's batch (8 × 384², AdamW, median of 3)."""
    import torch
    import torch.nn.functional as F
    from timing import median_seconds

    from pixelwise.registry import create_model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(
        "| candidate | forward, 1×360×480 (ms) | training step, 8×384² (s) | 40 epochs of train+val, compute only (min) |"
    )
    print("|---|---:|---:|---:|")
    for name, (arch, params) in COST.items():
        model = (
            create_model(arch, num_classes=11, **params)
            .to(memory_format=torch.channels_last)
            .eval()
        )
        x = torch.randn(1, 3, 360, 480).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            forward = 1000 * median_seconds(lambda: model(x), 15, warmup=3)  # noqa: B023
        model.train()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        xb = torch.randn(8, 3, 384, 384).to(memory_format=torch.channels_last)
        yb = torch.randint(0, 11, (8, 384, 384))

        def train_step() -> None:
            loss = F.cross_entropy(model(xb), yb)  # noqa: B023
            opt.zero_grad()  # noqa: B023
            loss.backward()
            opt.step()  # noqa: B023

        step = median_seconds(train_step, 3, warmup=1)
        print(f"| {name} | {forward:.1f} | {step:.2f} | {step * 59 * 40 / 60:.0f} |", flush=True)


def table(paths: list[Path]) -> str:
    rows = [
        "| run | model | epochs | seed | val mIoU (last) | test mIoU (train-only model) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for path in paths:
        for name, r in json.loads(Path(path).read_text()).items():
            last = (r.get("metrics_csv") or "").strip().splitlines()
            head = last[0].split(",") if last else []
            col = head.index("val_miou") if "val_miou" in head else None
            scored = [v.split(",") for v in last[1:]]
            scored = [(int(v[0]), float(v[col])) for v in scored if col is not None and v[col]]
            if r.get("finished", True) and scored and scored[-1][0] == r.get("epochs"):
                val = f"{100 * scored[-1][1]:.2f}"
            elif scored:  # killed at the time limit: its best checkpoint, before the schedule ended
                ep, best = max(scored, key=lambda e: e[1])
                val = f"{100 * best:.2f} (killed; best at epoch {ep})"
            else:
                val = "—"
            test = f"{100 * r['test']['miou']:.2f}" if r.get("test") else "—"
            p = r["model"]["params"]
            extra = {k: v for k, v in p.items() if k not in ("encoder", "encoder_weights")}
            desc = f"{r['model']['name']} / {p['encoder'].replace('tf_efficientnet_', '')} {extra}"
            rows.append(
                f"| {name} | {desc} | {r.get('epochs')} | {r.get('seed')} | {val} | {test} |"
            )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, default=ROOT / ".gpu")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/camvid")
    r = sub.add_parser("run")
    r.add_argument("--set", choices=["1", "2"], default="1")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--payload", type=Path, default=ROOT / ".gpu")
    r.add_argument(
        "--limit", type=float, default=420.0, help="seconds before unfinished runs are killed"
    )
    r.add_argument("--smoke", action="store_true")
    c = sub.add_parser("cost", help="CPU cost of the candidates here: inference and training step")
    c.add_argument("--threads", type=int, default=None)
    t = sub.add_parser("table")
    t.add_argument("paths", type=Path, nargs="+")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.out, a.data)
    elif a.cmd == "run":
        sweep(a.set, a.out, a.payload, a.limit, a.smoke)
    elif a.cmd == "cost":
        cost(a.threads)
    else:
        print(table(a.paths))


if __name__ == "__main__":
    main()
