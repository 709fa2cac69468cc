"""Training: data checked first, then epochs of mixed-precision SGD/AdamW with a per-step schedule,
validation every N epochs, atomic checkpoints and an exact ``--resume``.

An output folder holds ``best.ckpt`` (best validation score by ``train.monitor``, mIoU by default;
weights and metadata), ``last.ckpt`` (all state needed to resume: model, optimizer, scheduler, scaler,
epoch, step, RNG states, callback state), ``metrics.csv``, ``config.yaml`` (resolved),
``manifest.json`` (versions, git commit, command line) and ``curves.png``; with ``train.tensorboard``,
TensorBoard event files in ``tensorboard/``.

The loop is made of steps, each a function of one mutable :class:`TrainState` (torchvision's
references keep ``train_one_epoch`` and ``evaluate`` apart the same way): :func:`setup` builds it,
:func:`resume_from` loads ``last.ckpt`` into it, :func:`train_one_epoch`, :func:`validate` and
:func:`write_checkpoint` advance and save it, and :func:`fit` runs epochs of them, calling the
callbacks (:mod:`pixelwise.engine.callbacks`) at each event. :func:`train` does all of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from .. import __version__, outputs
from .._atomic import write_text_atomic
from ..config import RunConfig
from ..data import (
    SegmentationDataset,
    build_train_transform,
    check_dataset,
    default_normalization,
    load_dataset_spec,
)
from ..data.classes import IGNORE_INDEX
from ..data.sampling import rare_class_weights
from ..data.spec import DatasetSpec
from ..data.validate import SplitReport
from ..errors import PixelwiseError, first_line
from ..losses import build_loss, class_weights
from ..registry import create_model, model_skeleton
from .callbacks import (
    Callback,
    CallbackList,
    Monitor,
    ValidationResult,
    ValidationSample,
    default_callbacks,
)
from .checkpoint import ModelMeta, load_checkpoint, read_checksums, save_checkpoint
from .distributed import (
    DistContext,
    all_reduce_sum,
    current_context,
    local_device,
    lr_multiplier,
    reduce_confusion,
    sync_batchnorm,
)
from .evaluate import confusion_over, eval_loader
from .guard import (
    GracefulStop,
    TrainingInterrupted,
    deterministic,
    remove_stale_temp_files,
    seed_worker,
)
from .inference import InferenceConfig
from .loading import LoadedModel
from .predictor import Segmenter
from .runtime import autocast, resolve_amp

__all__ = [
    "RESUME_MAY_CHANGE",
    "TrainResult",
    "TrainState",
    "build_optimizer",
    "check_resume_config",
    "fit",
    "lr_factor",
    "resolve_class_weights",
    "resume_from",
    "setup",
    "train",
    "train_one_epoch",
    "train_order",
    "validate",
    "write_checkpoint",
    "write_run_files",
]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """How a run ended. ``best_miou`` is the validation mIoU of ``best.ckpt``'s epoch;
    ``best_score`` its ``monitor`` score (the one that chose it)."""

    out_dir: Path
    epochs_run: int
    steps: int
    best_miou: float | None
    best_epoch: int | None
    seconds: float
    monitor: str = "miou"
    best_score: float | None = None
    stopped_early: bool = False


@dataclass
class TrainState:
    """Everything a run holds while it trains; the step functions read and advance it.

    ``epoch`` counts finished epochs (``train_one_epoch`` trains epoch ``epoch + 1``, 1-based in
    logs and ``metrics.csv``); ``step`` counts optimizer steps. ``best_score``, ``best_miou`` and
    ``best_epoch`` describe ``best.ckpt``. ``rows`` are ``metrics.csv``'s rows. ``skip`` and
    ``partial`` are where a run stopped inside an epoch (batches done, their loss totals). A
    callback sets ``stop_training`` to end the run after the current epoch.
    """

    cfg: RunConfig
    out: Path
    spec: DatasetSpec
    meta: ModelMeta
    ctx: DistContext
    device: torch.device
    amp: torch.dtype | None
    net: torch.nn.Module  # the module itself: saved and validated; DDP's wrapper only trains
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_ds: SegmentationDataset
    val_loader: DataLoader | None
    monitor: Monitor
    callbacks: CallbackList
    # training images per process and epoch (train.samples_per_epoch or the split, shared out by
    # DistributedSampler's rule: padded to equal shares)
    per_rank: int
    lr_scale: float = 1.0  # train.lr_scaling's multiplier (1 in a single process)
    synced_bn: bool = False
    aux_weight: float = 0.0  # > 0 for models with an auxiliary head
    progress: bool = True
    ddp: DistributedDataParallel | None = None
    train_loader: DataLoader | None = None  # kept across epochs with persistent workers
    epoch: int = 0
    step: int = 0
    start_epoch: int = 0
    best_score: float | None = None
    best_miou: float = -1.0
    best_epoch: int | None = None
    rows: list[dict] = field(default_factory=list)
    skip: int = 0
    partial: dict | None = None
    stop_training: bool = False
    # per-image draw weights of rare-class oversampling (train.rare_class_sampling), else None
    sample_weights: list[float] | None = None

    @property
    def model(self) -> torch.nn.Module:
        """What trains: DistributedDataParallel's wrapper in a process group, else :attr:`net`."""
        return self.ddp if self.ddp is not None else self.net

    @property
    def last_path(self) -> Path:
        return self.out / "last.ckpt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.ckpt"

    @property
    def max_steps_reached(self) -> bool:
        ms = self.cfg.train.max_steps
        return ms is not None and self.step >= ms


def build_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and normalisation parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    o = cfg.optim
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def resolve_class_weights(
    cfg: RunConfig, class_names: list[str], report: SplitReport
) -> list[float] | None:
    """``loss.class_weights`` as numbers: a list is checked against the classes; a scheme name
    (``median_frequency``, ...) is computed from the train split's pixel counts in ``report``."""
    cw = cfg.loss.class_weights
    k = len(class_names)
    if cw is None:
        return None
    if not isinstance(cw, str):
        if len(cw) != k:
            raise PixelwiseError(
                f"loss.class_weights has {len(cw)} values; the dataset has {k} classes"
            )
        return list(cw)
    if report.class_pixels is None:
        raise PixelwiseError(f"loss.class_weights {cw!r}: the train split has no pixel counts")
    weights = class_weights(
        cw,
        report.class_pixels,
        image_pixels=report.class_image_pixels,
        beta=cfg.loss.class_weights_beta,
    )
    absent = [n for n, c in zip(class_names, report.class_pixels, strict=True) if c == 0]
    if absent:
        log.warning(
            "class(es) %s have no pixels in split %r: class weight 0",
            ", ".join(absent),
            report.split,
        )
    log.info(
        "class weights (%s, split %r): %s",
        cw,
        report.split,
        ", ".join(f"{n} {w:.4g}" for n, w in zip(class_names, weights, strict=True)),
    )
    return weights


def lr_factor(step: int, total: int, cfg: RunConfig) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` of ``total``."""
    s = cfg.schedule
    if s.warmup_iters > 0 and step < s.warmup_iters:
        return s.warmup_start + (1 - s.warmup_start) * step / s.warmup_iters
    if s.name == "constant":
        return 1.0
    span = max(1, total - s.warmup_iters)
    t = min(1.0, (step - s.warmup_iters) / span)
    if s.name == "poly":
        f = (1 - t) ** s.power
    else:
        f = 0.5 * (1 + math.cos(math.pi * t))
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * f


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _manifest(cfg: RunConfig, device: torch.device, amp: torch.dtype | None, resumed: bool) -> dict:
    import albumentations
    import timm

    return {
        "pixelwise": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "albumentations": albumentations.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "amp": str(amp).replace("torch.", "") if amp else "off",
        "git_commit": _git_commit(),
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed": resumed,
        "dataset": cfg.data.dataset,
        "effective_batch_size": cfg.train.batch_size * cfg.train.grad_accum,
    }


def _train_sampler(ds: Dataset, ctx: DistContext, seed: int, epoch: int) -> Sampler:
    """One process: a permutation seeded by ``seed + epoch``. Several (torchrun): this process's
    share of one permutation per epoch (``DistributedSampler.set_epoch``), padded with repeats so
    every process takes the same number of steps."""
    if not ctx.enabled:
        return RandomSampler(ds, generator=torch.Generator().manual_seed(seed + epoch))
    sampler = DistributedSampler(
        ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    return sampler


def train_order(
    ds: Dataset,
    ctx: DistContext,
    seed: int,
    epoch: int,
    samples: int | None = None,
    weights: Sequence[float] | None = None,
) -> list[int]:
    """This process's sample indices for epoch ``epoch`` (0-based): a pure function of its
    arguments, so a resumed run draws what an uninterrupted one does.

    ``samples`` None: :func:`_train_sampler`'s order (one pass over the split). ``samples`` k: epoch
    e is draws ``e*k`` to ``(e+1)*k - 1`` of permutations of the split seeded ``seed + 0``,
    ``seed + 1``, ... placed end to end (every sample drawn once per pass; k = the split's length in
    one process is the same as None). ``weights`` (rare-class oversampling,
    :mod:`pixelwise.data.sampling`): ``samples`` (or the split's length) draws with replacement in
    proportion to the weights, seeded ``seed + epoch``. Under torchrun each process takes every
    ``world_size``-th draw, padded with the first draws to equal shares (DistributedSampler's rule).
    """
    n = len(ds)  # type: ignore[arg-type]
    if weights is not None:
        count = samples or n
        w = torch.as_tensor(list(weights), dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed + epoch)
        return _rank_share(torch.multinomial(w, count, True, generator=gen).tolist(), ctx)
    if samples is None:
        return list(_train_sampler(ds, ctx, seed, epoch))
    first, end = epoch * samples, (epoch + 1) * samples
    passes = range(first // n, (end - 1) // n + 1)
    draws = [
        i
        for j in passes
        for i in torch.randperm(n, generator=torch.Generator().manual_seed(seed + j)).tolist()
    ]
    return _rank_share(draws[first - passes[0] * n :][:samples], ctx)


def _rank_share(order: list[int], ctx: DistContext) -> list[int]:
    """This process's share of one epoch's draws: every ``world_size``-th, padded with the first
    draws so every process takes the same number (DistributedSampler's rule)."""
    if not ctx.enabled:
        return order
    samples = len(order)
    total = math.ceil(samples / ctx.world_size) * ctx.world_size
    order = order + (order * math.ceil(total / samples))[: total - samples]
    return order[ctx.rank : total : ctx.world_size]


class _EpochIndices(Sampler[tuple[int, int]]):
    """The ``(epoch, index)`` items of one epoch, set before each: iterated in the main process,
    they carry the epoch to DataLoader workers that outlive it (persistent workers), so every item's
    augmentation is seeded by its own epoch."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []

    def __iter__(self):  # noqa: ANN204 - an iterator of (epoch, index)
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _no_sync(model: torch.nn.Module, accumulate: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for a forward pass whose gradients are only accumulated (``grad_accum``):
    the processes average gradients once per optimizer step, not once per micro-batch."""
    if accumulate and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


# ---- the whole run -------------------------------------------------------------------------------


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``cfg`` into ``out_dir``; with ``resume`` continue exactly from ``out_dir/last.ckpt``.

    Ctrl-C (SIGINT) stops at the next optimizer step, after saving ``last.ckpt`` there (resumable
    inside the epoch), and raises :class:`~pixelwise.engine.guard.TrainingInterrupted`. With
    ``train.deterministic``, PyTorch runs deterministic algorithms only while training runs.

    Args:
        cfg: the recipe.
        out_dir: the run folder.
        resume: continue the run in ``out_dir``.
        progress: progress bars.
        callbacks: called after the built-in ones (:func:`~pixelwise.engine.callbacks.default_callbacks`)
            at each event of the loop (:mod:`pixelwise.engine.callbacks`).
    """
    with GracefulStop() as stop, deterministic(cfg.train.deterministic):
        return _train(
            cfg, out_dir, resume=resume, progress=progress, stop=stop, callbacks=callbacks
        )


def _train(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool,
    progress: bool,
    stop: GracefulStop,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``cfg`` into ``out_dir``; with ``resume`` continue exactly from ``out_dir/last.ckpt``.

    In a process group (torchrun, :func:`~pixelwise.engine.distributed.init_distributed`) this is
    DistributedDataParallel: each process trains on its share of every epoch and validates its share
    of the split, the confusion matrices are summed, and rank 0 alone writes files.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    if resume and not (out / "last.ckpt").exists():
        raise PixelwiseError(f"{out / 'last.ckpt'}: nothing to resume (no last.ckpt in {out})")
    if not resume and (out / "last.ckpt").exists():
        raise PixelwiseError(
            f"{out} already holds a run (last.ckpt); pass --resume to continue it or choose another --out"
        )
    if resume:
        check_resume_config(cfg, out)
    state = setup(cfg, out, progress=progress, callbacks=callbacks)
    if resume:
        resume_from(state, state.last_path)
    distribute(state)
    write_run_files(state, resumed=resume)
    fit(state, stop)
    return TrainResult(
        out_dir=out,
        epochs_run=state.epoch - state.start_epoch,
        steps=state.step,
        best_miou=state.best_miou if state.best_miou >= 0 else None,
        best_epoch=state.best_epoch,
        seconds=time.perf_counter() - t_start,
        monitor=state.monitor.name,
        best_score=state.best_score,
        stopped_early=state.stop_training,
    )


# ---- setup ---------------------------------------------------------------------------------------


def setup(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainState:
    """A run's starting state, built from ``cfg``: the dataset (checked for bad data first), the
    model, loss, optimizer, learning-rate schedule and gradient scaler, seeded by ``train.seed``;
    the callbacks the recipe asks for, then ``callbacks``. Writes nothing.

    Raises:
        PixelwiseError: a bad setting or bad data, in one line.
    """
    tc = cfg.train
    if tc.batch_size < 1 or tc.grad_accum < 1 or tc.epochs < 1:
        raise PixelwiseError(
            "train.batch_size, train.grad_accum and train.epochs must be at least 1"
        )
    if tc.early_stopping_patience is not None and not cfg.data.val_split:
        raise PixelwiseError(
            "train.early_stopping_patience needs a validation split (data.val_split)"
        )
    chosen = [*default_callbacks(cfg), *callbacks]  # a missing optional package fails first

    spec = load_dataset_spec(cfg.data.dataset)
    monitor = Monitor.parse(tc.monitor, spec.class_names)
    # the model's arguments and size, on the meta device: before the data is read or anything built
    try:
        model_skeleton(
            cfg.model.name,
            num_classes=1 if cfg.model.output == "sigmoid" else spec.num_classes,
            in_channels=spec.image_channels,
            **cfg.model.params,
        )
    except PixelwiseError as exc:
        raise PixelwiseError(f"model.params: {exc}") from None
    splits = [cfg.data.train_split] + ([cfg.data.val_split] if cfg.data.val_split else [])
    log.info(
        "dataset %s: %d classes (%s), from %s",
        spec.name,
        spec.num_classes,
        ", ".join(spec.class_names),
        spec.source,
    )
    log.info("checking dataset %s (%s)", spec.name, ", ".join(splits))
    train_report = check_dataset(spec, splits)[0]
    mean, std = default_normalization(spec.image_channels)
    mean = tuple(cfg.normalize.mean or mean)
    std = tuple(cfg.normalize.std or std)
    if len(mean) != spec.image_channels or len(std) != spec.image_channels:
        raise PixelwiseError(
            f"normalize.mean/std need {spec.image_channels} value(s) for this dataset's images"
        )

    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed % 2**32)
    random.seed(tc.seed)
    ctx = current_context()  # under torchrun: one of several processes (engine.distributed)
    device = local_device(tc.device, ctx)
    amp = resolve_amp(tc.amp, device)
    train_ds, val_loader = _datasets(cfg, spec, mean, std, ctx)
    meta = _model_meta(cfg, spec, mean, std)
    net, synced_bn = _build_net(cfg, meta, ctx, device)
    loss_fn = build_loss(
        [(t.name, t.weight, t.params) for t in cfg.loss.terms],
        class_weights=resolve_class_weights(cfg, spec.class_names, train_report),
        ignore_index=IGNORE_INDEX,
    ).to(device)
    optimizer = build_optimizer(cfg, net)
    lr_scale = lr_multiplier(tc.lr_scaling, ctx.world_size)  # 1 in a single process
    for group in optimizer.param_groups:
        group["lr"] *= lr_scale
    per_epoch = tc.samples_per_epoch or len(train_ds)
    per_rank = math.ceil(per_epoch / ctx.world_size)  # DistributedSampler pads to equal shares
    total_steps = tc.epochs * max(1, math.ceil(per_rank / tc.batch_size) // tc.grad_accum)
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    if cfg.schedule.warmup_iters >= total_steps:
        log.warning(
            "schedule.warmup_iters %d is not shorter than the run (%d optimizer steps): the "
            "learning rate never reaches optim.lr",
            cfg.schedule.warmup_iters,
            total_steps,
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, cfg)
    )
    return TrainState(
        cfg=cfg,
        out=Path(out_dir),
        spec=spec,
        meta=meta,
        ctx=ctx,
        device=device,
        amp=amp,
        net=net,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=amp == torch.float16),
        train_ds=train_ds,
        val_loader=val_loader,
        monitor=monitor,
        callbacks=CallbackList(chosen, is_main=ctx.is_main),
        per_rank=per_rank,
        lr_scale=lr_scale,
        synced_bn=synced_bn,
        aux_weight=float(getattr(net, "aux_weight", 0.0)),
        progress=progress and ctx.is_main,
        sample_weights=_sample_weights(cfg, train_report),
    )


def _sample_weights(cfg: RunConfig, report: SplitReport) -> list[float] | None:
    """train.rare_class_sampling's per-image weights (None when off), logged in one line."""
    rcs = cfg.train.rare_class_sampling
    if rcs is None or report.sample_class_pixels is None:
        return None
    w = rare_class_weights(
        report.sample_class_pixels,
        temperature=rcs.temperature,
        min_share=rcs.min_share,
        share=rcs.share,
    )
    n = len(w)
    log.info(
        "rare-class sampling: %d of %d images drawn more often than uniform, at most %.2fx",
        int((w * n > 1 + 1e-9).sum()),
        n,
        float(w.max() * n),
    )
    return w.tolist()


def _datasets(
    cfg: RunConfig,
    spec: DatasetSpec,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    ctx: DistContext,
) -> tuple[SegmentationDataset, DataLoader | None]:
    """The augmented training split, and the validation loader (this process's share), if any."""
    a, tc = cfg.augment, cfg.train
    train_ds = SegmentationDataset(
        spec,
        cfg.data.train_split,
        build_train_transform(
            crop_size=a.crop_size,
            scale=a.scale,
            hflip=a.hflip,
            vflip=a.vflip,
            rotate90=a.rotate90,
            color_jitter=a.color_jitter,
            mean=mean,
            std=std,
        ),
        seed=tc.seed,
    )
    if not cfg.data.val_split:
        return train_ds, None
    val_loader = eval_loader(
        spec,
        cfg.data.val_split,
        mean,
        std,
        batch_size=tc.eval_batch_size,
        num_workers=tc.num_workers,
        shard=ctx if ctx.enabled else None,
    )
    return train_ds, val_loader


def _model_meta(
    cfg: RunConfig, spec: DatasetSpec, mean: tuple[float, ...], std: tuple[float, ...]
) -> ModelMeta:
    if cfg.model.output == "sigmoid" and spec.num_classes != 2:
        raise PixelwiseError(
            f"model.output 'sigmoid' is for binary data (2 classes); dataset {spec.name!r} has "
            f"{spec.num_classes}: use model.output 'softmax'"
        )
    return ModelMeta(
        arch=cfg.model.name,
        num_classes=spec.num_classes,
        in_channels=spec.image_channels,
        class_names=spec.class_names,
        colors=[list(c) for c in spec.colors],
        mean=list(mean),
        std=list(std),
        model_kwargs=dict(cfg.model.params),
        dataset=spec.name,
        output=cfg.model.output,
        threshold=cfg.model.threshold,
    )


def _build_net(
    cfg: RunConfig, meta: ModelMeta, ctx: DistContext, device: torch.device
) -> tuple[torch.nn.Module, bool]:
    """The model on ``device`` (channels-last, SyncBatchNorm when asked); whether BN is synced."""
    net = create_model(
        cfg.model.name,
        num_classes=meta.out_channels,
        in_channels=meta.in_channels,
        **cfg.model.params,
    ).to(device)
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return sync_batchnorm(net, cfg.train.sync_batchnorm, ctx, device)


# Settings a resumed run may change: each takes effect from the resumed step on and contradicts
# nothing restored from last.ckpt. Every other setting is fixed by what last.ckpt holds (optimizer
# and schedule state, weights, data order and augmentation, loss) and is refused if changed.
RESUME_MAY_CHANGE = frozenset(
    {
        "train.epochs",  # extend (or shorten) the run: the schedule follows the new length
        "train.max_steps",
        "train.val_every",
        "train.eval_batch_size",
        "train.num_workers",
        "train.persistent_workers",
        "train.device",
        "train.channels_last",
        "train.deterministic",
        "train.tensorboard",
        "train.monitor",  # best.ckpt is then chosen anew from the next validation
        "train.early_stopping_patience",
        "train.early_stopping_min_delta",
        # another number of processes: keep the effective batch and the learning rate
        "train.grad_accum",
        "train.lr_scaling",
        "train.sync_batchnorm",
    }
)
_UNSET = object()


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _run_recipe(out: Path) -> tuple[dict | None, Path]:
    """The recipe a run was trained with, as ``RunConfig.model_dump(mode="json")`` gives it: its
    ``config.yaml``, else (a run written before there was one) the one in ``last.ckpt``."""
    path = out / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        path = out / "last.ckpt"
        raw = load_checkpoint(path).get("config")
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PixelwiseError(f"{path}: cannot read the run's recipe ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        return None, path
    try:
        return RunConfig(**raw).model_dump(mode="json"), path
    except ValueError:  # a recipe of an older version: compare what it holds
        return raw, path


def check_resume_config(cfg: RunConfig, out: str | Path) -> None:
    """Refuse to resume the run in ``out`` with settings that ``last.ckpt`` fixes.

    ``cfg`` is compared with the run's ``config.yaml``; only the settings in
    :data:`RESUME_MAY_CHANGE` may differ, and ``data.val_split`` may be turned off or on (not
    changed to another split: best.ckpt would compare scores of two splits). So the
    ``config.yaml`` a resumed run writes holds only values it uses.

    Raises:
        PixelwiseError: one line naming the first changed setting, its two values and the file.
    """
    before, path = _run_recipe(Path(out))
    if before is None:
        return
    old, new = _flat(before), _flat(cfg.model_dump(mode="json"))
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        if a == b or key in RESUME_MAY_CHANGE:
            continue
        if (a is _UNSET or b is _UNSET) and not key.startswith("model.params."):
            continue  # a setting one of the two versions does not have
        if key == "data.val_split" and None in (a, b):
            continue
        shown = ["unset" if v is _UNSET else repr(v) for v in (a, b)]
        raise PixelwiseError(
            f"--resume: {key} is {shown[1]} but the run in {out} was trained with {shown[0]} "
            f"({path.name}); last.ckpt's state fixes it: resume without changing it, or start "
            "a new run (another --out)"
        )


def resume_from(state: TrainState, path: str | Path) -> None:
    """Load a ``last.ckpt`` into ``state``: weights, optimizer, schedule, scaler, epoch, step, best,
    metrics rows, RNG states, callback state, and where in an epoch it stopped."""
    cfg, ctx = state.cfg, state.ctx
    ckpt = load_checkpoint(path)
    st = ckpt["train_state"]
    state.net.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(st["optimizer"])
    state.scheduler.load_state_dict(st["scheduler"])
    state.scaler.load_state_dict(st["scaler"])
    state.epoch = state.start_epoch = st["epoch"]
    state.step = st["step"]
    state.best_miou, state.best_epoch = st["best_miou"], st["best_epoch"]
    # older checkpoints: mIoU picked best.ckpt, and -1 meant "not validated yet"
    was = st.get("monitor", "miou")
    state.best_score = st.get("best_score", st["best_miou"] if st["best_miou"] >= 0 else None)
    if was != state.monitor.name:
        log.warning(
            "%s kept best.ckpt by %s; train.monitor is now %s: the next validation is the best",
            path,
            was,
            state.monitor.name,
        )
        state.best_score = None
    _set_rng_state(st["rng"])
    state.rows = [dict(r) for r in st["metrics"]]
    state.skip, state.partial = st.get("batch", 0), st.get("partial")
    state.callbacks.load_state_dict(st.get("callbacks", {}))
    log.info("resuming %s at epoch %d, step %d", state.out, state.epoch, state.step)
    if st.get("world_size", 1) != ctx.world_size:
        log.warning(
            "resuming a run of %d process(es) with %d: the data order differs from an "
            "uninterrupted run's",
            st.get("world_size", 1),
            ctx.world_size,
        )
    if st.get("world_size", 1) != ctx.world_size or state.lr_scale != 1.0:
        # the rate this run's processes and train.lr_scaling give (as the manifest says)
        base = cfg.optim.lr * state.lr_scale
        state.scheduler.base_lrs = [base for _ in state.scheduler.base_lrs]


def distribute(state: TrainState) -> None:
    """In a process group, wrap the model in DistributedDataParallel (after any resume, so every
    process starts from the same weights)."""
    if state.ctx.enabled and state.ddp is None:
        d = state.device
        state.ddp = DistributedDataParallel(
            state.net, device_ids=[d.index] if d.type == "cuda" else None
        )


def write_run_files(state: TrainState, *, resumed: bool) -> None:
    """Rank 0: the run folder, ``config.yaml`` and ``manifest.json`` (keeping the checkpoint
    checksums of a resumed run); temporary files of a killed write removed."""
    if not state.ctx.is_main:
        return
    cfg, ctx, tc, out = state.cfg, state.ctx, state.cfg.train, state.out
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = cfg.model_dump(mode="json")
    write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False))
    remove_stale_temp_files(out)  # of a run killed while writing
    manifest = _manifest(cfg, state.device, state.amp, resumed)
    manifest["deterministic"] = tc.deterministic
    manifest["checksums"] = read_checksums(out / "manifest.json") if resumed else {}
    manifest.update(
        world_size=ctx.world_size,
        distributed_backend=ctx.backend,
        per_process_batch_size=tc.batch_size,
        effective_batch_size=tc.batch_size * tc.grad_accum * ctx.world_size,
        lr_scaling=tc.lr_scaling,
        lr=cfg.optim.lr * state.lr_scale,
        sync_batchnorm=state.synced_bn,
    )
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")


# ---- checkpoints ---------------------------------------------------------------------------------


def write_checkpoint(state: TrainState, kind: str, *, position: dict | None = None) -> Path:
    """Rank 0: write ``best.ckpt`` (``kind`` "best": weights and metadata) or ``last.ckpt`` ("last":
    also everything :func:`resume_from` needs; ``position``: where in an epoch it stopped), record
    its checksum in the manifest, and tell the callbacks. Returns the path."""
    if kind not in ("best", "last"):
        raise ValueError(f"checkpoint kind must be 'best' or 'last', got {kind!r}")
    path = state.out / f"{kind}.ckpt"
    if not state.ctx.is_main:
        return path
    payload = {
        "meta": state.meta.to_dict(),
        "model": {k: v.detach().cpu() for k, v in state.net.state_dict().items()},
        "epoch": state.epoch,
        "best_miou": state.best_miou,
        "config": state.cfg.model_dump(mode="json"),
    }
    if kind == "last":
        payload["train_state"] = {
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "best_miou": state.best_miou,
            "best_epoch": state.best_epoch,
            "monitor": state.monitor.name,
            "best_score": state.best_score,
            "rng": _rng_state(),
            "metrics": [dict(r) for r in state.rows],
            "world_size": state.ctx.world_size,
            "callbacks": state.callbacks.state_dict(),
            **(position or {}),
        }
    save_checkpoint(path, payload, manifest=state.out / "manifest.json")
    state.callbacks.on_checkpoint(state, path, kind)
    return path


# ---- one epoch -----------------------------------------------------------------------------------


def train_one_epoch(state: TrainState, stop: GracefulStop | None = None) -> dict:
    """Train epoch ``state.epoch + 1`` (from where a resumed run stopped inside it), advancing
    ``state.step`` and ``state.epoch``; return its ``metrics.csv`` row (validation columns empty).

    After each optimizer step: stop at ``train.max_steps``; on ``stop.requested`` (Ctrl-C), save a
    resumable ``last.ckpt`` there and raise :class:`~pixelwise.engine.guard.TrainingInterrupted`.

    Raises:
        PixelwiseError: the loss is not finite (naming the epoch, step, batch files and last
            good checkpoint).
    """
    tc = state.cfg.train
    t0 = time.perf_counter()
    first = state.skip
    done = state.partial if first and state.partial else {}
    loss_sum, loss_n, images = (done.get(k, 0) for k in ("loss_sum", "loss_n", "images"))
    state.skip, state.partial = 0, None
    bar = tqdm(
        _epoch_loader(state, first),
        desc=f"epoch {state.epoch + 1}/{tc.epochs}",
        disable=not state.progress,
        unit="batch",
        dynamic_ncols=True,
    )
    state.model.train()
    state.optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(bar):
        loss = _forward_backward(state, batch, accumulate=(i + 1) % tc.grad_accum != 0)
        n = batch["image"].shape[0]
        loss_sum += loss * n
        loss_n += n
        images += n
        if (i + 1) % tc.grad_accum:
            continue
        _optimizer_step(state)
        bar.set_postfix(
            loss=f"{loss_sum / loss_n:.4f}", lr=f"{state.optimizer.param_groups[0]['lr']:.2e}"
        )
        if state.max_steps_reached:
            break
        if stop is not None and stop.requested:  # Ctrl-C: save where the run stands, then stop
            at = {"loss_sum": loss_sum, "loss_n": loss_n, "images": images}
            _interrupt(state, {"batch": first + i + 1, "partial": at})
    bar.close()
    if state.ctx.enabled:  # the epoch's loss and images over every process
        summed = all_reduce_sum(torch.tensor([loss_sum, loss_n, images], dtype=torch.float64))
        loss_sum, loss_n, images = summed[0].item(), int(summed[1]), int(summed[2])
    seconds = time.perf_counter() - t0
    state.epoch += 1
    return {
        "epoch": state.epoch,
        "step": state.step,
        "lr": state.optimizer.param_groups[0]["lr"],
        "train_loss": loss_sum / max(1, loss_n),
        "val_miou": "",
        "val_pixel_accuracy": "",
        "val_mean_accuracy": "",
        "train_images_per_second": round(images / max(seconds, 1e-9), 3),
    }


def _epoch_loader(state: TrainState, skip: int) -> DataLoader:
    """Epoch ``state.epoch + 1``'s batches in their seeded order, less the first ``skip``.

    With ``train.persistent_workers`` (and workers) one loader serves every epoch, its workers kept;
    else a loader is built per epoch. Either way the items are ``(epoch, index)``, so an item's
    augmentation depends on its epoch and index only, never on which loader or worker reads it."""
    tc, epoch = state.cfg.train, state.epoch
    state.train_ds.set_epoch(epoch)
    order = train_order(
        state.train_ds, state.ctx, tc.seed, epoch, tc.samples_per_epoch, state.sample_weights
    )
    keep = tc.persistent_workers and tc.num_workers > 0
    if state.train_loader is None or not keep:
        state.train_loader = DataLoader(
            state.train_ds,
            batch_size=tc.batch_size,
            sampler=_EpochIndices(),
            num_workers=tc.num_workers,
            generator=torch.Generator().manual_seed(tc.seed + epoch),  # workers' seeds
            worker_init_fn=seed_worker,
            drop_last=state.per_rank >= tc.batch_size,
            pin_memory=state.device.type == "cuda",
            persistent_workers=keep,
        )
    sampler: _EpochIndices = state.train_loader.sampler  # type: ignore[assignment]
    sampler.items = [(epoch, i) for i in order[skip * tc.batch_size :]]  # resumed: batches not done
    return state.train_loader


def _forward_backward(state: TrainState, batch: dict, *, accumulate: bool) -> float:
    """Forward a batch, back-propagate its (scaled, accumulated) loss; return the loss."""
    tc, device, model = state.cfg.train, state.device, state.model
    x = batch["image"].to(device, non_blocking=True)
    y = batch["mask"].to(device, non_blocking=True)
    if tc.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _no_sync(model, accumulate), autocast(device, state.amp):
        if state.aux_weight:  # deep supervision (PSPNet): weighted loss of the auxiliary head
            heads = model(x, return_aux=True)
            logits, aux_logits = heads["out"], heads["aux"]
        else:
            logits = model(x)
    loss = state.loss_fn(logits.float(), y)
    if state.aux_weight:
        loss = loss + state.aux_weight * state.loss_fn(aux_logits.float(), y)
    if not torch.isfinite(loss):
        last = state.last_path
        raise PixelwiseError(
            f"loss became {loss.item()} at epoch {state.epoch + 1}, step {state.step}; "
            f"batch: {', '.join(Path(p).name for p in batch['path'][:4])}; "
            f"last good checkpoint: {last if last.exists() else 'none'}"
        )
    state.scaler.scale(loss / tc.grad_accum).backward()
    return loss.item()


def _optimizer_step(state: TrainState) -> None:
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.step += 1


def _interrupt(state: TrainState, position: dict) -> None:
    """Ctrl-C between optimizer steps: save a ``last.ckpt`` that resumes at ``position`` and raise
    :class:`~pixelwise.engine.guard.TrainingInterrupted` (under torchrun, ``KeyboardInterrupt``)."""
    if state.ctx.enabled:
        raise KeyboardInterrupt
    path = write_checkpoint(state, "last", position=position)
    raise TrainingInterrupted(
        f"interrupted at epoch {state.epoch + 1}, step {state.step}: saved {path}; "
        "continue with --resume"
    )


# ---- validation ----------------------------------------------------------------------------------


def validation_config(cfg: RunConfig) -> InferenceConfig:
    """How validation runs the network: the training precision (``train.amp``) and memory layout,
    no TTA and no CRF (validation scores the network itself), tiling as ``evaluate`` defaults it."""
    return InferenceConfig(amp=cfg.train.amp, crf=False, channels_last=cfg.train.channels_last)


def validation_segmenter(
    net: torch.nn.Module, meta: ModelMeta, device: torch.device, config: InferenceConfig
) -> Segmenter:
    """The network being trained, bound to ``config``: validation's logits come from
    :meth:`Segmenter.logits`, the one inference path that evaluate, predict and serve take."""
    return Segmenter(LoadedModel(net, meta), config=config, device=device)


def validate(state: TrainState, *, samples: int = 0) -> ValidationResult:
    """Score the model on the validation split: each process scores its share, the confusion
    matrices are summed, every score comes from the totals. ``samples``: keep that many of this
    process's images with their predictions and masks (for pictures)."""
    if state.val_loader is None:
        raise PixelwiseError("validation needs a validation split (data.val_split)")
    kept: list[ValidationSample] = []
    mean = torch.tensor(state.meta.mean).view(-1, 1, 1)
    std = torch.tensor(state.meta.std).view(-1, 1, 1)

    def labels(logits: torch.Tensor, batch: dict) -> torch.Tensor:
        pred = outputs.labels(logits, state.meta.threshold)
        for image, p, m in zip(batch["image"], pred, batch["mask"], strict=True):
            if len(kept) >= samples:
                break
            pixels = ((image * std + mean) * 255).clamp(0, 255).round().to(torch.uint8)
            kept.append(
                ValidationSample(pixels.permute(1, 2, 0).numpy(), p.cpu().numpy(), m.numpy())
            )
        return pred

    state.model.eval()
    with torch.no_grad():
        seg = validation_segmenter(
            state.net, state.meta, state.device, validation_config(state.cfg)
        )
        cm = confusion_over(
            seg.logits,
            state.val_loader,
            state.spec.num_classes,
            threshold=state.meta.threshold,
            progress=state.progress,
            desc="validate",
            labels_fn=labels if samples > 0 else None,
        )
    return ValidationResult(reduce_confusion(cm).scores(), kept)  # totals over every process


# ---- the loop ------------------------------------------------------------------------------------


def fit(state: TrainState, stop: GracefulStop | None = None) -> None:
    """Train epochs from ``state.epoch`` until ``train.epochs``, ``train.max_steps`` or a callback's
    ``state.stop_training``: each epoch is trained, validated when due (every ``train.val_every``
    epochs, and the last), then ``best.ckpt`` (when the monitored score improved; every epoch
    without a validation split), the callbacks' epoch end and ``last.ckpt``."""
    tc = state.cfg.train
    state.callbacks.on_train_start(state)
    try:
        while state.epoch < tc.epochs and not state.max_steps_reached and not state.stop_training:
            t0 = time.perf_counter()
            row = train_one_epoch(state, stop)
            last = state.epoch == tc.epochs or state.max_steps_reached
            if state.val_loader is not None and (state.epoch % tc.val_every == 0 or last):
                result = validate(state, samples=state.callbacks.validation_samples)
                _record_validation(state, result, row)
            elif state.val_loader is None:
                state.best_epoch = state.epoch
                write_checkpoint(state, "best")
            row["epoch_seconds"] = round(time.perf_counter() - t0, 3)
            state.rows.append(row)
            state.callbacks.on_epoch_end(state, row)
            write_checkpoint(state, "last")
    finally:
        state.callbacks.on_train_end(state)


def _record_validation(state: TrainState, result: ValidationResult, row: dict) -> None:
    """Put a validation's scores in ``row``; when the monitored score beats the best so far (or no
    epoch was best yet), make this epoch the best; tell the callbacks; write ``best.ckpt``."""
    s = result.scores
    score = state.monitor.value(s)
    row.update(
        val_miou=round(s.miou, 6),
        val_pixel_accuracy=round(s.pixel_accuracy, 6),
        val_mean_accuracy=round(s.mean_accuracy, 6),
        val_mean_dice=round(s.mean_dice, 6),
        val_monitor=round(score, 6),
    )
    improved = not math.isnan(score) and (state.best_score is None or score > state.best_score)
    if improved:
        state.best_score = score
    best = improved or state.best_epoch is None
    if best:
        state.best_miou, state.best_epoch = s.miou, state.epoch
    state.callbacks.on_validation(state, result)
    if best:
        write_checkpoint(state, "best")
