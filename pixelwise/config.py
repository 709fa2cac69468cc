"""Typed run configuration: one home for every training default.

A recipe is a YAML file whose keys mirror :class:`RunConfig`; ``--set key.sub=value`` overrides any
field (the value is parsed as YAML). Unknown keys are errors. Relative paths in a recipe are relative to
the recipe file; relative paths given with ``--set`` are relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import PixelwiseError, first_line, pydantic_message

__all__ = [
    "DataConfig",
    "ModelConfig",
    "AugmentConfig",
    "NormalizeConfig",
    "LossTerm",
    "LossConfig",
    "OptimConfig",
    "ScheduleConfig",
    "RareClassSampling",
    "TrainConfig",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "MONITOR_MEANS",
    "MONITOR_PER_CLASS",
]

# train.monitor: a mean score, or one class's score as "<kind>:<class name>"
MONITOR_MEANS = ("miou", "mean_dice", "pixel_accuracy", "mean_accuracy")
MONITOR_PER_CLASS = ("iou", "dice")


# numbers that only make sense in a range (every float is also finite: no nan, no inf)
_Positive = Annotated[float, Field(gt=0.0)]
_NonNegative = Annotated[float, Field(ge=0.0)]
_Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
_Side = Annotated[int, Field(ge=1)]
_MAX_SCALE = 10.0  # augment.scale: a 480×360 image at 10× is already 17 M pixels


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataConfig(_Strict):
    dataset: str  # dataset YAML, or a folder with images/ and masks/
    train_split: str = "train"
    val_split: str | None = "val"


class ModelConfig(_Strict):
    name: str = "unet"
    params: dict[str, Any] = Field(default_factory=dict)  # architecture arguments
    # softmax: one logit per class; sigmoid: a one-channel binary model (the dataset has 2 classes)
    output: Literal["softmax", "sigmoid"] = "softmax"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)  # sigmoid: predict class 1 where σ(z) > threshold

    @model_validator(mode="after")
    def _checked_arguments(self) -> ModelConfig:
        """The architecture and its arguments against the registry's limits, before any data is
        read or anything built (the model's size is checked once the dataset gives its classes)."""
        from .registry import check_model_args

        taken = sorted({"num_classes", "in_channels"} & set(self.params))
        if taken:
            raise ValueError(f"params must not set {', '.join(taken)}: the dataset gives them")
        check_model_args(self.name, self.params, complete=False)
        return self


class AugmentConfig(_Strict):
    crop_size: tuple[_Side, _Side] | None = (256, 256)  # (H, W); None trains on whole images
    scale: tuple[_Positive, _Positive] = (0.5, 2.0)  # (min, max) random rescaling
    hflip: bool = True
    vflip: bool = False
    rotate90: bool = False
    color_jitter: _NonNegative = 0.0

    @field_validator("scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"min {v[0]} is more than max {v[1]}")
        if v[1] > _MAX_SCALE:
            raise ValueError(f"max {v[1]} is more than {_MAX_SCALE} (images grow by its square)")
        return v


class NormalizeConfig(_Strict):
    mean: list[float] | None = None  # None: ImageNet for RGB, 0.5 for grayscale
    std: list[_Positive] | None = None


class LossTerm(_Strict):
    name: str = "ce"
    weight: _NonNegative = 1.0
    params: dict[str, Any] = Field(default_factory=dict)


ClassWeightScheme = Literal["inverse_frequency", "median_frequency", "effective_number"]


class LossConfig(_Strict):
    terms: list[LossTerm] = Field(default_factory=lambda: [LossTerm()], min_length=1)
    # one weight per class, or a scheme computed from the train split's pixel counts
    class_weights: list[_NonNegative] | ClassWeightScheme | None = None
    class_weights_beta: float = Field(0.9999, ge=0.0, lt=1.0)  # effective_number only

    @model_validator(mode="after")
    def _something_to_learn(self) -> LossConfig:
        if not any(t.weight > 0 for t in self.terms):
            raise ValueError("every loss term has weight 0: nothing would be learned")
        cw = self.class_weights
        if isinstance(cw, list) and not any(w > 0 for w in cw):
            raise ValueError("class_weights are all 0: nothing would be learned")
        return self

    @field_validator("class_weights", mode="before")
    @classmethod
    def _known_scheme(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in get_args(ClassWeightScheme):
            raise ValueError(
                f"unknown class-weight scheme {v!r}; use {', '.join(get_args(ClassWeightScheme))} "
                "or a list with one weight per class"
            )
        return v


class OptimConfig(_Strict):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: _Positive = 1e-3
    weight_decay: _NonNegative = 1e-4
    momentum: _Fraction = 0.9  # sgd
    nesterov: bool = False  # sgd
    betas: tuple[_Fraction, _Fraction] = (0.9, 0.999)  # adamw


class ScheduleConfig(_Strict):
    name: Literal["poly", "cosine", "constant"] = "poly"
    power: _NonNegative = 0.9  # poly
    warmup_iters: int = Field(0, ge=0)  # optimizer steps; a warm-up as long as the run is warned of
    warmup_start: float = Field(0.01, ge=0.0, le=1.0)  # warm-up starts at lr * warmup_start
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)


class RareClassSampling(_Strict):
    """Rare-class oversampling (pixelwise.data.sampling; DAFormer's rare class sampling mixed with
    uniform draws): ``share`` of the draws pick a class by softmax((1 - pixel share) / temperature)
    and then an image holding at least ``min_share`` of that class."""

    temperature: float = Field(0.01, gt=0.0)
    min_share: float = Field(0.001, ge=0.0, lt=1.0)
    share: float = Field(0.5, ge=0.0, le=1.0)


class TrainConfig(_Strict):
    epochs: int = Field(50, ge=1)
    # stop after this many optimizer steps (smoke runs)
    max_steps: int | None = Field(None, ge=1)
    # per process; effective batch = batch_size × grad_accum × processes
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    eval_batch_size: int = Field(4, ge=1)
    num_workers: int = Field(2, ge=0)
    # keep the DataLoader workers alive across epochs (only with num_workers > 0)
    persistent_workers: bool = True
    # samples drawn per epoch, from seeded permutations of the split placed end to end (a small
    # dataset gets longer epochs); None: one pass over the split
    samples_per_epoch: int | None = Field(None, ge=1)
    # rare-class oversampling: epochs drawn with replacement by per-image weights; None: uniform
    rare_class_sampling: RareClassSampling | None = None
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    val_every: int = Field(1, ge=1)  # epochs
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    channels_last: bool = False
    # torch.use_deterministic_algorithms: bit-identical reruns on CPU (docs/reliability.md)
    deterministic: bool = False
    # several processes (torchrun): optim.lr is the rate for one process's batch; linear
    # multiplies it by the number of processes (Goyal et al. 2017), none keeps it
    lr_scaling: Literal["none", "linear"] = "none"
    sync_batchnorm: bool = False  # SyncBatchNorm across GPU processes; plain BatchNorm in one
    # the validation score that picks best.ckpt and drives early stopping (docs/training.md):
    # miou, mean_dice, pixel_accuracy, mean_accuracy, or one class's iou:<class> or dice:<class>
    monitor: str = "miou"
    # stop after this many validations in a row that do not raise train.monitor by more than
    # early_stopping_min_delta; None: never stop early
    early_stopping_patience: int | None = Field(None, ge=1)
    early_stopping_min_delta: float = Field(0.0, ge=0.0)
    tensorboard: bool = False  # event files in <out>/tensorboard (needs pixelwise[tensorboard])

    @field_validator("monitor", mode="before")
    @classmethod
    def _known_monitor(cls, v: Any) -> Any:
        kind, sep, name = v.partition(":") if isinstance(v, str) else ("", "", "")
        if (not sep and kind in MONITOR_MEANS) or (sep and kind in MONITOR_PER_CLASS and name):
            return v
        raise ValueError(
            f"unknown monitor {v!r}; use {', '.join(MONITOR_MEANS)}, iou:<class> or dice:<class>"
        )


class RunConfig(_Strict):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def _resolve(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(os.path.expandvars(path)))
    return str(p if p.is_absolute() else (base / p).resolve())


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise PixelwiseError(f"--set {item!r}: expected key=value (e.g. train.epochs=10)")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false"):
            parsed = value  # YAML 1.1 reads off/on/yes/no as booleans; keep the word
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise PixelwiseError(f"--set {item!r}: {part!r} is not a section")
            node = child
        if parts == ["data", "dataset"] and isinstance(parsed, str):
            parsed = _resolve(parsed, Path.cwd())
        node[parts[-1]] = parsed
    return raw


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> RunConfig:
    """Load a recipe YAML, resolve its relative paths, apply overrides, validate."""
    p = Path(path)
    if not p.is_file():
        raise PixelwiseError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PixelwiseError(f"{p}: invalid YAML ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise PixelwiseError(f"{p}: expected a mapping of sections (data, model, train, ...)")
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("dataset"), str):
        data["dataset"] = _resolve(data["dataset"], p.parent)
    apply_overrides(raw, overrides or [])
    try:
        return RunConfig(**raw)
    except ValidationError as exc:
        raise PixelwiseError(pydantic_message(exc, str(p))) from None
