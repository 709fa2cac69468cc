"""Several processes, one run: the process group, sharding and reductions on ``torch.distributed``.

``torchrun`` starts one process per device and tells each its place through environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`init_distributed`
joins the group those variables describe, NCCL for CUDA devices and gloo for the CPU, and returns a
:class:`DistContext`. Without those variables, or with a world of one process, nothing is initialised
and every helper here is the identity: a single process runs exactly as it does without torchrun.

Training shards its data with ``DistributedSampler`` (padded so every rank takes the same number of
steps). Evaluation and prediction must see every input exactly once, so they never use it: they shard
by position (:func:`shard_indices`, :func:`shard_batches`), and evaluation sums the confusion matrices
of all ranks (:func:`reduce_confusion`) before any score is computed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..errors import PixelwiseError, first_line
from ..metrics import ConfusionMatrix
from .runtime import resolve_device

__all__ = [
    "DistContext",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "close_distributed",
    "current_context",
    "distributed_session",
    "init_distributed",
    "local_device",
    "lr_multiplier",
    "reduce_confusion",
    "shard",
    "shard_batches",
    "shard_indices",
    "sync_batchnorm",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# torchrun's variables; RANK and WORLD_SIZE decide whether this process is one of several
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_rank`` on its
    node; ``backend`` is ``"nccl"`` or ``"gloo"``, ``None`` for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints, plots and reports."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise PixelwiseError(
            f"environment variable {name}={value!r}: expected an integer"
        ) from None


def current_context() -> DistContext:
    """The context of the process group already initialised, or a single process's."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    backend = str(dist.get_backend()).lower()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistContext(dist.get_rank(), dist.get_world_size(), local, backend)


def init_distributed(device: str = "auto", *, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group that torchrun's environment describes (idempotent).

    Args:
        device: the run's device setting (``auto``, ``cpu``, ``cuda``...): CUDA → NCCL, CPU → gloo.
        timeout_s: how long a collective may wait for the other processes.

    Returns:
        This process's :class:`DistContext`; a single process's when ``RANK``/``WORLD_SIZE`` are
        absent or the world has one process.
    """
    if dist.is_available() and dist.is_initialized():
        return current_context()
    if not all(k in os.environ for k in _ENV[:2]):
        return DistContext()
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    if world < 1 or not 0 <= rank < world:
        raise PixelwiseError(f"RANK={rank}, WORLD_SIZE={world}: rank must lie in 0..WORLD_SIZE-1")
    if world == 1:
        return DistContext()
    if not dist.is_available():
        raise PixelwiseError("this PyTorch build has no torch.distributed; run one process")
    dev = resolve_device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        count = torch.cuda.device_count()
        if local >= count:
            raise PixelwiseError(
                f"LOCAL_RANK={local} but this node has {count} CUDA device(s): start at most "
                f"{count} process(es) per node (--nproc-per-node)"
            )
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    try:
        dist.init_process_group(
            backend, init_method="env://", timeout=timedelta(seconds=timeout_s), **kwargs
        )
    except (RuntimeError, ValueError) as exc:
        first = first_line(exc)
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise PixelwiseError(
            f"rank {rank} of {world} could not join the {backend} process group at {where} "
            f"({first[:200]})"
        ) from None
    ctx = DistContext(rank, world, local, backend)
    log.debug("joined process group: rank %d of %d (%s)", rank, world, backend)
    return ctx


@contextlib.contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistContext]:
    """:func:`init_distributed` for the duration of a block; the group it opened is closed after."""
    opened = not (dist.is_available() and dist.is_initialized())
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        if opened:
            close_distributed()


def local_device(device: str, ctx: DistContext) -> torch.device:
    """``device`` resolved for this process: with several processes on CUDA, ``cuda:LOCAL_RANK``
    (one GPU per process, whatever index the setting named)."""
    dev = resolve_device(device)
    if ctx.enabled and dev.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return dev


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Positions ``0..n-1`` that process ``rank`` of ``world_size`` takes: every ``world_size``-th
    from ``rank``. Over all ranks each position appears exactly once (none repeated as padding, none
    dropped); shard sizes differ by at most one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise PixelwiseError(f"rank {rank} of {world_size}: rank must lie in 0..world_size-1")
    if n < 0:
        raise PixelwiseError(f"cannot shard a negative number of items ({n})")
    return list(range(rank, n, world_size))


def shard(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This process's share of ``items`` (all of them in a single process)."""
    return [items[i] for i in shard_indices(len(items), ctx.rank, ctx.world_size)]


def shard_batches(batches: Sequence[list[int]], ctx: DistContext) -> list[list[int]]:
    """This process's share of whole batches: each image is predicted in the same batch as by one
    process, so the summed confusion matrix equals one process's exactly."""
    return shard(batches, ctx)


def _comm(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` on the device the backend communicates from."""
    if dist.get_backend() == "nccl":
        return tensor.to(torch.device("cuda", torch.cuda.current_device()), copy=True)
    return tensor.detach().to("cpu", copy=True)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (a new tensor on ``tensor``'s device); ``tensor``
    itself in a single process."""
    if not current_context().enabled:
        return tensor
    work = _comm(tensor)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def reduce_confusion(cm: ConfusionMatrix) -> ConfusionMatrix:
    """The confusion matrix summed over all processes: scores come from the totals, never from
    averaging per-process scores."""
    if not current_context().enabled:
        return cm
    total = ConfusionMatrix(cm.num_classes, ignore_index=cm.ignore_index)
    total.matrix = all_reduce_sum(cm.matrix)
    return total


def all_gather_objects(obj: T) -> list[T]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    ctx = current_context()
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every process (nothing in a single process)."""
    if current_context().enabled:
        dist.barrier()


def lr_multiplier(rule: str, world_size: int) -> float:
    """The factor on ``optim.lr`` for ``world_size`` processes: ``none`` → 1; ``linear`` → the number
    of processes, i.e. proportional to the effective batch (Goyal et al. 2017, "Accurate, Large
    Minibatch SGD"), taking ``optim.lr`` as the rate for one process's batch."""
    if rule == "none":
        return 1.0
    if rule == "linear":
        return float(world_size)
    raise PixelwiseError(f"train.lr_scaling {rule!r}: use none or linear")


def sync_batchnorm(
    model: nn.Module, enabled: bool, ctx: DistContext, device: torch.device
) -> tuple[nn.Module, bool]:
    """``model`` with its BatchNorm layers turned into SyncBatchNorm, when asked for and useful.

    Returns:
        The model (converted, or as it was) and whether it now synchronises its batch statistics:
        never in a single process (plain BatchNorm), nor on the CPU, where PyTorch's SyncBatchNorm
        does not run (a warning says so). The state dict's keys are the same either way.
    """
    if not enabled or not ctx.enabled:
        return model, False
    if device.type == "cpu":
        log.warning(
            "train.sync_batchnorm: PyTorch's SyncBatchNorm needs GPUs; on the CPU each process "
            "keeps plain BatchNorm over its own batch"
        )
        return model, False
    return nn.SyncBatchNorm.convert_sync_batchnorm(model), True


def close_distributed() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
