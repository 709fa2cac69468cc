"""Training: data checked first, then epochs of mixed-precision SGD/AdamW with a per-step schedule,
validation every N epochs, atomic checkpoints and an exact ``--resume``.

An output folder holds ``best.ckpt`` (best validation mIoU; weights and metadata), ``last.ckpt`` (all
state needed to resume: model, optimizer, scheduler, scaler, epoch, step, RNG states), ``metrics.csv``,
``config.yaml`` (resolved), ``manifest.json`` (versions, git commit, command line) and ``curves.png``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from .. import __version__
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
from ..data.validate import SplitReport
from ..errors import PixelwiseError
from ..losses import build_loss, class_weights
from ..registry import create_model
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
from .runtime import autocast, resolve_amp
from .visualize import plot_curves

__all__ = ["TrainResult", "train", "build_optimizer", "lr_factor", "resolve_class_weights"]

log = logging.getLogger(__name__)

METRIC_FIELDS = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "val_miou",
    "val_pixel_accuracy",
    "val_mean_accuracy",
    "epoch_seconds",
    "train_images_per_second",
]


@dataclass
class TrainResult:
    out_dir: Path
    epochs_run: int
    steps: int
    best_miou: float | None
    best_epoch: int | None
    seconds: float


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


def _no_sync(model: torch.nn.Module, accumulate: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` for a forward pass whose gradients are only accumulated (``grad_accum``):
    the processes average gradients once per optimizer step, not once per micro-batch."""
    if accumulate and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def _write_metrics(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def train(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir``; with ``resume`` continue exactly from ``out_dir/last.ckpt``.

    Ctrl-C (SIGINT) stops at the next optimizer step, after saving ``last.ckpt`` there (resumable
    inside the epoch), and raises :class:`~pixelwise.engine.guard.TrainingInterrupted`. With
    ``train.deterministic``, PyTorch runs deterministic algorithms only while training runs.
    """
    with GracefulStop() as stop, deterministic(cfg.train.deterministic):
        return _train(cfg, out_dir, resume=resume, progress=progress, stop=stop)


def _train(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool,
    progress: bool,
    stop: GracefulStop,
) -> TrainResult:
    """Train ``cfg`` into ``out_dir``; with ``resume`` continue exactly from ``out_dir/last.ckpt``.

    In a process group (torchrun, :func:`~pixelwise.engine.distributed.init_distributed`) this is
    DistributedDataParallel: each process trains on its share of every epoch and validates its share
    of the split, the confusion matrices are summed, and rank 0 alone writes files.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    last_path, best_path = out / "last.ckpt", out / "best.ckpt"
    if resume and not last_path.exists():
        raise PixelwiseError(f"{last_path}: nothing to resume (no last.ckpt in {out})")
    if not resume and last_path.exists():
        raise PixelwiseError(
            f"{out} already holds a run (last.ckpt); pass --resume to continue it or choose another --out"
        )
    tc = cfg.train
    if tc.batch_size < 1 or tc.grad_accum < 1 or tc.epochs < 1:
        raise PixelwiseError(
            "train.batch_size, train.grad_accum and train.epochs must be at least 1"
        )

    # --- data, checked before anything else -------------------------------------------------
    spec = load_dataset_spec(cfg.data.dataset)
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
    progress = progress and ctx.is_main

    a = cfg.augment
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
    val_loader = (
        eval_loader(
            spec,
            cfg.data.val_split,
            mean,
            std,
            batch_size=tc.eval_batch_size,
            num_workers=tc.num_workers,
            shard=ctx if ctx.enabled else None,
        )
        if cfg.data.val_split
        else None
    )

    # --- model, loss, optimisation ----------------------------------------------------------
    if cfg.model.output == "sigmoid" and spec.num_classes != 2:
        raise PixelwiseError(
            f"model.output 'sigmoid' is for binary data (2 classes); dataset {spec.name!r} has "
            f"{spec.num_classes}: use model.output 'softmax'"
        )
    meta = ModelMeta(
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
    model = create_model(
        cfg.model.name,
        num_classes=meta.out_channels,
        in_channels=spec.image_channels,
        **cfg.model.params,
    ).to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model, synced_bn = sync_batchnorm(model, tc.sync_batchnorm, ctx, device)
    aux_weight = float(getattr(model, "aux_weight", 0.0))  # > 0 for models with an auxiliary head
    loss_fn = build_loss(
        [(t.name, t.weight, t.params) for t in cfg.loss.terms],
        class_weights=resolve_class_weights(cfg, spec.class_names, train_report),
        ignore_index=IGNORE_INDEX,
    ).to(device)
    optimizer = build_optimizer(cfg, model)
    lr_scale = lr_multiplier(tc.lr_scaling, ctx.world_size)  # 1 in a single process
    for group in optimizer.param_groups:
        group["lr"] *= lr_scale
    per_rank = math.ceil(len(train_ds) / ctx.world_size)  # DistributedSampler pads to equal shares
    batches_per_epoch = math.ceil(per_rank / tc.batch_size)
    steps_per_epoch = max(1, batches_per_epoch // tc.grad_accum)
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, cfg)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    start_epoch, step, best_miou, best_epoch = 0, 0, -1.0, None
    skip, partial = 0, None  # a run stopped inside an epoch: batches done, their loss totals
    rows: list[dict] = []
    if resume:
        ckpt = load_checkpoint(last_path)
        st = ckpt["train_state"]
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        start_epoch, step = st["epoch"], st["step"]
        best_miou, best_epoch = st["best_miou"], st["best_epoch"]
        _set_rng_state(st["rng"])
        rows = [dict(r) for r in st["metrics"]]
        skip, partial = st.get("batch", 0), st.get("partial")
        log.info("resuming %s at epoch %d, step %d", out, start_epoch, step)
        if st.get("world_size", 1) != ctx.world_size:
            log.warning(
                "resuming a run of %d process(es) with %d: the data order differs from an "
                "uninterrupted run's",
                st.get("world_size", 1),
                ctx.world_size,
            )
        if st.get("world_size", 1) != ctx.world_size or lr_scale != 1.0:
            # the rate this run's processes and train.lr_scaling give (as the manifest says)
            scheduler.base_lrs = [cfg.optim.lr * lr_scale for _ in scheduler.base_lrs]

    net = model  # the module itself: saved and validated; DDP's wrapper only trains
    if ctx.enabled:
        model = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )

    cfg_dict = cfg.model_dump(mode="json")
    if ctx.is_main:  # rank 0 alone writes files
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False))
        remove_stale_temp_files(out)  # of a run killed while writing
        manifest = _manifest(cfg, device, amp, resume)
        manifest["deterministic"] = tc.deterministic
        manifest["checksums"] = read_checksums(out / "manifest.json") if resume else {}
        manifest.update(
            world_size=ctx.world_size,
            distributed_backend=ctx.backend,
            per_process_batch_size=tc.batch_size,
            effective_batch_size=tc.batch_size * tc.grad_accum * ctx.world_size,
            lr_scaling=tc.lr_scaling,
            lr=cfg.optim.lr * lr_scale,
            sync_batchnorm=synced_bn,
        )
        write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")

    def save(path: Path, *, full: bool, epoch: int, position: dict | None = None) -> None:
        if not ctx.is_main:
            return
        payload = {
            "meta": meta.to_dict(),
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "epoch": epoch,
            "best_miou": best_miou,
            "config": cfg_dict,
        }
        if full:
            payload["train_state"] = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "step": step,
                "best_miou": best_miou,
                "best_epoch": best_epoch,
                "rng": _rng_state(),
                "metrics": [dict(r) for r in rows],
                "world_size": ctx.world_size,
                **(position or {}),
            }
        save_checkpoint(path, payload, manifest=out / "manifest.json")

    def val_logits(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if tc.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            return net(x).float()

    done = start_epoch
    for epoch in range(start_epoch, tc.epochs):
        if tc.max_steps is not None and step >= tc.max_steps:
            break
        t0 = time.perf_counter()
        train_ds.set_epoch(epoch)
        first = skip if epoch == start_epoch else 0
        loader = DataLoader(
            train_ds,
            batch_size=tc.batch_size,
            # resuming inside an epoch: the same order, less the batches already done
            sampler=list(_train_sampler(train_ds, ctx, tc.seed, epoch))[first * tc.batch_size :],
            num_workers=tc.num_workers,
            generator=torch.Generator().manual_seed(tc.seed + epoch),  # workers' seeds
            worker_init_fn=seed_worker,
            drop_last=per_rank >= tc.batch_size,
            pin_memory=device.type == "cuda",
        )
        model.train()
        loss_sum, loss_n, images = 0.0, 0, 0
        if first and partial:
            loss_sum, loss_n, images = partial["loss_sum"], partial["loss_n"], partial["images"]
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{tc.epochs}",
            disable=not progress,
            unit="batch",
            dynamic_ncols=True,
        )
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(bar):
            x = batch["image"].to(device, non_blocking=True)
            y = batch["mask"].to(device, non_blocking=True)
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _no_sync(model, (i + 1) % tc.grad_accum != 0), autocast(device, amp):
                if aux_weight:  # deep supervision (PSPNet): weighted loss of the auxiliary head
                    heads = model(x, return_aux=True)
                    logits, aux_logits = heads["out"], heads["aux"]
                else:
                    logits = model(x)
            loss = loss_fn(logits.float(), y)
            if aux_weight:
                loss = loss + aux_weight * loss_fn(aux_logits.float(), y)
            if not torch.isfinite(loss):
                raise PixelwiseError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                    f"batch: {', '.join(Path(p).name for p in batch['path'][:4])}; "
                    f"last good checkpoint: {last_path if last_path.exists() else 'none'}"
                )
            scaler.scale(loss / tc.grad_accum).backward()
            loss_sum += loss.item() * x.shape[0]
            loss_n += x.shape[0]
            images += x.shape[0]
            if (i + 1) % tc.grad_accum == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                bar.set_postfix(
                    loss=f"{loss_sum / loss_n:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}"
                )
                if tc.max_steps is not None and step >= tc.max_steps:
                    break
                if stop.requested:  # Ctrl-C: save where the run stands, then stop
                    if ctx.enabled:
                        raise KeyboardInterrupt
                    at = {"loss_sum": loss_sum, "loss_n": loss_n, "images": images}
                    save(
                        last_path,
                        full=True,
                        epoch=epoch,
                        position={"batch": first + i + 1, "partial": at},
                    )
                    raise TrainingInterrupted(
                        f"interrupted at epoch {epoch + 1}, step {step}: saved {last_path}; "
                        "continue with --resume"
                    )
        bar.close()
        if ctx.enabled:  # the epoch's loss and images over every process
            totals = all_reduce_sum(torch.tensor([loss_sum, loss_n, images], dtype=torch.float64))
            loss_sum, loss_n, images = totals[0].item(), int(totals[1]), int(totals[2])
        train_seconds = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            "step": step,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(1, loss_n),
            "val_miou": "",
            "val_pixel_accuracy": "",
            "val_mean_accuracy": "",
            "train_images_per_second": round(images / max(train_seconds, 1e-9), 3),
        }
        last_epoch = epoch + 1 == tc.epochs or (tc.max_steps is not None and step >= tc.max_steps)
        if val_loader is not None and ((epoch + 1) % tc.val_every == 0 or last_epoch):
            model.eval()
            with torch.no_grad():
                scores = reduce_confusion(  # every process scores its share; totals summed
                    confusion_over(
                        val_logits,
                        val_loader,
                        spec.num_classes,
                        threshold=meta.threshold,
                        progress=progress,
                        desc="validate",
                    )
                ).scores()
            row.update(
                val_miou=round(scores.miou, 6),
                val_pixel_accuracy=round(scores.pixel_accuracy, 6),
                val_mean_accuracy=round(scores.mean_accuracy, 6),
            )
            if scores.miou > best_miou:
                best_miou, best_epoch = scores.miou, epoch + 1
                save(best_path, full=False, epoch=epoch + 1)
        elif val_loader is None:
            best_epoch = epoch + 1
            save(best_path, full=False, epoch=epoch + 1)
        row["epoch_seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
        log.info(
            "epoch %d/%d: step %d, loss %.4f, lr %.2e, %.1f img/s, %.0fs%s",
            epoch + 1,
            tc.epochs,
            step,
            row["train_loss"],
            row["lr"],
            row["train_images_per_second"],
            row["epoch_seconds"],
            f", val mIoU {100 * row['val_miou']:.2f}%" if row["val_miou"] != "" else "",
        )
        if ctx.is_main:
            _write_metrics(rows, out / "metrics.csv")
            plot_curves(rows, out / "curves.png")
        save(last_path, full=True, epoch=epoch + 1)
        done = epoch + 1
    return TrainResult(
        out_dir=out,
        epochs_run=done - start_epoch,
        steps=step,
        best_miou=best_miou if best_miou >= 0 else None,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - t_start,
    )
