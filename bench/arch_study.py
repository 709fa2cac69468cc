"""Architecture study: every architecture with a CamVid recipe trained on one budget, scored on the
CamVid test split.

    python bench/arch_study.py --epochs 40 --crop 256                  # the whole study
    python bench/arch_study.py --epochs 40 --crop 256 --archs fcn8s deeplabv3plus
    python bench/arch_study.py --epochs 40 --crop 256 --set schedule.warmup_iters=20 --list

Architectures: those with a recipe ``configs/camvid_<arch>.yaml`` — FCN-32s/16s/8s, U-Net (the original,
from scratch), U-Net on an encoder, PSPNet, DeepLab v1/v2/v3/v3+ and ParseNet. Every run is
``pixelwise.engine.train`` on its recipe with the budget's overrides (epochs, crop, optional steps and
batch size, then any ``--set`` given here; the same for every architecture), then
``pixelwise.engine.evaluate`` of its ``best.ckpt`` on CamVid's test split.

All recipes but one share an ImageNet-pretrained ``tf_efficientnet_lite0`` encoder, lr 0.001 and inputs
scaled to [-1, 1], each architecture at its own default output stride; ``configs/camvid_unet.yaml`` is
the original U-Net trained from scratch (half width, lr 0.002, ImageNet mean/std), so its row compares
more than the architecture.

Resumable across sessions: each run lives in ``<out>/<budget>/camvid_<arch>/``; a run holding
``eval.json`` is done and skipped, one holding ``last.ckpt`` is resumed. After every finished run the
report is rewritten: ``docs/architecture_study.md`` (a row per architecture: encoder, output stride,
parameters and GFLOPs at 360×480 measured by ``pixelwise.engine.complexity``, test mIoU and per-class
IoU with pole, sign, pedestrian, bicyclist and fence first, steps, train minutes) and
``docs/architecture_study.png`` (IoU bars, and mIoU against GFLOPs). The machinery is ``bench/study.py``.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from study import ROOT, Column, Dataset, Results, Study, Variant, iou_bars, run_config
from study import main as run_study

__all__ = ["ARCHS", "COST_SIZE", "STUDIES", "STUDY", "complexity", "main"]

COST_SIZE = (360, 480)  # CamVid's test images: parameters and GFLOPs are measured at this size

STUDIES = {
    "camvid": Dataset(None, "test", ("pole", "sign", "pedestrian", "bicyclist", "fence")),
}

# name → label; the recipe is configs/camvid_<name>.yaml
ARCHS = {
    "fcn32s": "FCN-32s",
    "fcn16s": "FCN-16s",
    "fcn8s": "FCN-8s",
    "unet": "U-Net (original, from scratch)",
    "unet_encoder": "U-Net (encoder)",
    "pspnet": "PSPNet",
    "deeplabv1": "DeepLab v1",
    "deeplabv2": "DeepLab v2",
    "deeplabv3": "DeepLab v3",
    "deeplabv3plus": "DeepLab v3+",
    "parsenet": "ParseNet",
}


@cache
def _measure(name: str, params: str, num_classes: int, in_channels: int) -> Any:
    from pixelwise.engine.complexity import model_complexity

    return model_complexity(
        name,
        size=COST_SIZE,
        num_classes=num_classes,
        in_channels=in_channels,
        **json.loads(params),
    )


def complexity(cfg: Any) -> Any:
    """:class:`pixelwise.engine.complexity.Complexity` of ``cfg``'s model at :data:`COST_SIZE`,
    with the class count and image channels of ``cfg``'s dataset (no weights are loaded)."""
    from pixelwise.data import load_dataset_spec

    spec = load_dataset_spec(cfg.data.dataset)
    params = json.dumps(dict(cfg.model.params), sort_keys=True)
    return _measure(cfg.model.name, params, spec.num_classes, spec.image_channels)


def _encoder(cfg: Any) -> str:
    from pixelwise.engine.complexity import default_encoder

    p = cfg.model.params
    name = p.get("encoder") or default_encoder(cfg.model.name)
    if name is None:
        return "own, from scratch"
    weights = p.get("encoder_weights")
    return f"{name}, {'from scratch' if weights is None else weights}"


def plot(study: Study, results: Results, path: Path) -> None:
    """IoU bars per architecture (left) and test mIoU against GFLOPs at 360×480 (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    runs = results.get("camvid")
    if not runs:
        return
    fig, (bars, cost) = plt.subplots(1, 2, figsize=(16, 5), gridspec_kw={"width_ratios": [2.2, 1]})
    iou_bars(bars, study, "camvid", runs)
    bars.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    costs = []
    for arch, rep in runs.items():
        gflops = complexity(run_config(study, "camvid", arch, rep["study"]["overrides"])).gflops
        costs.append(gflops)
        miou = 100 * (rep["miou"] or 0.0)
        cost.scatter(gflops, miou)
        cost.annotate(study.variants[arch].label, (gflops, miou), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")  # fmt: skip
    cost.set_xscale("log")
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= max(costs) * 1.5]
    cost.set_xticks([t for t in ticks if t >= min(costs) / 1.5] or ticks[-1:])
    cost.xaxis.set_major_formatter(ScalarFormatter())
    cost.xaxis.set_minor_formatter(NullFormatter())
    cost.set_xlabel(f"GFLOPs at {COST_SIZE[0]}×{COST_SIZE[1]}")
    cost.set_ylabel("test mIoU %")
    cost.set_title("accuracy against cost")
    cost.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


STUDY = Study(
    name="arch_study",
    script="bench/arch_study.py",
    doc_name="architecture_study",
    title="Architecture study",
    intro=(
        "Every architecture with a CamVid recipe (`configs/camvid_<arch>.yaml`), trained on the same "
        "budget and scored on CamVid's test split. Written by `bench/arch_study.py` (see "
        "docs/architectures.md for the architectures):"
        "\n\n"
        "All recipes but one share an **ImageNet-pretrained `tf_efficientnet_lite0` encoder**, AdamW "
        "with lr 0.001 and inputs scaled to [−1, 1], each architecture at its own default output "
        "stride. **`configs/camvid_unet.yaml` is the original U-Net trained from scratch** (no "
        "pretrained encoder, half width, its own lr 0.002, ImageNet mean/std): its row compares a "
        "from-scratch network with pretrained ones, not only an architecture. "
        f"Parameters and GFLOPs are measured by `pixelwise.engine.complexity` at "
        f"{COST_SIZE[0]}×{COST_SIZE[1]} (the CamVid test size; inputs are padded to a multiple of "
        "the output stride inside the model): 2 FLOPs per multiply-add of convolutions and matrix "
        "products; PSPNet's auxiliary head (trained with weight 0.4) is counted in the parameters "
        "but not run. Train minutes are the summed epoch times of `metrics.csv` (validation "
        "included)."
    ),
    description=__doc__.split("\n\n")[0],
    datasets=STUDIES,
    variants={
        arch: Variant(label, recipe=ROOT / "configs" / f"camvid_{arch}.yaml")
        for arch, label in ARCHS.items()
    },
    variant_name="arch",
    variant_flag="archs",
    variant_header="architecture",
    columns=(
        Column("encoder", _encoder, numeric=False),
        Column("output stride", lambda cfg: str(complexity(cfg).output_stride or "—")),
        Column("params (M)", lambda cfg: f"{complexity(cfg).params / 1e6:.2f}"),
        Column(
            f"GFLOPs {COST_SIZE[0]}×{COST_SIZE[1]}", lambda cfg: f"{complexity(cfg).gflops:.1f}"
        ),
    ),
    plot=plot,
)


def main(argv: list[str] | None = None) -> int:
    """Run the architecture study (see the module docstring); returns the exit status."""
    return run_study(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
