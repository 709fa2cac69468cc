"""Loss study: one model per dataset trained with each loss, scored on the CamVid test split and the
membrane val split.

    python bench/loss_study.py --epochs camvid=12 membrane=40 --crop 256 --set train.val_every=2
    python bench/loss_study.py --epochs 12 --crop 256 --datasets camvid --losses ce wce
    python bench/loss_study.py --epochs camvid=12 membrane=40 --crop 256 --list   # runs, overrides

CamVid: ``configs/camvid_fcn8s.yaml``, FCN-8s on an ImageNet-pretrained EfficientNet-Lite0 (the
quickest recipe to train, and the best of the architecture study at a short budget: a from-scratch
U-Net needs about 40 epochs, over an hour each, to reach the small classes at all). Membrane:
``configs/membrane_unet.yaml``, the half-width original U-Net from scratch. The membrane set has 24
training slices (3 steps an epoch), CamVid 367 (46 steps), hence the epochs per dataset.

Losses: ``ce`` cross-entropy; ``wce`` cross-entropy with median-frequency class weights (SegNet);
``focal`` (gamma 2); ``dice`` (soft Dice); ``ce_dice`` (CE + Dice, weights 1 and 1); ``lovasz``
(Lovász-softmax). Every run is ``pixelwise.engine.train`` on the dataset's recipe with ``--set``-style overrides (the loss, then the budget, then any
``--set`` given here), then ``pixelwise.engine.evaluate`` of its ``best.ckpt``.

Resumable across sessions: each run lives in ``<out>/<budget>/<dataset>_<loss>/``. A run holding
``eval.json`` is done and skipped; one holding ``last.ckpt`` is resumed exactly where it stopped. The
budget (epochs, crop, steps, batch size, extra overrides) names the folder, so runs of different budgets
never mix. After every finished run the report is rewritten from all ``eval.json`` files found:
``docs/loss_study.md`` (one table per dataset: mIoU and per-class IoU, CamVid's small classes pole,
sign, pedestrian, bicyclist and fence first, in their own columns) and ``docs/loss_study.png``.

The machinery (runs, resuming, report, plot, command line) is ``bench/study.py``; this file only
defines the datasets and the losses.
"""

from __future__ import annotations

import sys

from study import ROOT, Dataset, Study, Variant
from study import main as run_study

__all__ = ["LOSSES", "STUDIES", "STUDY", "main"]

STUDIES = {
    "camvid": Dataset(
        ROOT / "configs" / "camvid_fcn8s.yaml",
        "test",
        ("pole", "sign", "pedestrian", "bicyclist", "fence"),
    ),
    "membrane": Dataset(ROOT / "configs" / "membrane_unet.yaml", "val", ("membrane", "cell")),
}

# name → (label, overrides). Every loss resets class_weights so that a recipe's own cannot leak in.
LOSSES = {
    "ce": ("cross-entropy", ["loss.terms=[{name: ce}]", "loss.class_weights=null"]),
    "wce": (
        "CE, median-frequency weights",
        ["loss.terms=[{name: ce}]", "loss.class_weights=median_frequency"],
    ),
    "focal": (
        "focal (γ = 2)",
        ["loss.terms=[{name: focal, params: {gamma: 2.0}}]", "loss.class_weights=null"],
    ),
    "dice": ("soft Dice", ["loss.terms=[{name: dice}]", "loss.class_weights=null"]),
    "ce_dice": (
        "CE + Dice",
        [
            "loss.terms=[{name: ce, weight: 1.0}, {name: dice, weight: 1.0}]",
            "loss.class_weights=null",
        ],
    ),
    "lovasz": ("Lovász-softmax", ["loss.terms=[{name: lovasz}]", "loss.class_weights=null"]),
}

STUDY = Study(
    name="loss_study",
    script="bench/loss_study.py",
    doc_name="loss_study",
    title="Loss study",
    intro="One recipe per dataset (CamVid: FCN-8s on an ImageNet EfficientNet-Lite0; membrane: the "
    "half-width U-Net from scratch) trained with each loss; only the loss changes. Written by "
    "`bench/loss_study.py` (see docs/losses.md for the losses):",
    description=__doc__.split("\n\n")[0],
    datasets=STUDIES,
    variants={k: Variant(label, tuple(o)) for k, (label, o) in LOSSES.items()},
    variant_name="loss",
    variant_flag="losses",
    variant_header="loss",
)


def main(argv: list[str] | None = None) -> int:
    """Run the loss study (see the module docstring); returns the exit status."""
    return run_study(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
