"""What keeps a training run's results safe and repeatable: a graceful Ctrl-C, deterministic mode,
seeded data-loading workers, and cleaning up after a killed run.

- :class:`GracefulStop` turns the first SIGINT into a request that training honours at the next
  optimizer-step boundary (it saves a resumable checkpoint there and raises
  :class:`TrainingInterrupted`); a second SIGINT interrupts at once.
- :func:`deterministic` switches PyTorch to deterministic algorithms while training runs
  (``--deterministic``), and names the operation when one has no deterministic implementation.
- :func:`seed_worker` seeds NumPy and ``random`` in each DataLoader worker from the loader's seed.
- :func:`remove_stale_temp_files` removes the temporary files that a run killed mid-write left.
- :func:`terminate_as_interrupt` makes SIGTERM stop a command as Ctrl-C does (``pixelwise predict``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType

import numpy as np
import torch

from ..errors import PixelwiseError, first_line

__all__ = [
    "GracefulStop",
    "TrainingInterrupted",
    "remove_stale_temp_files",
    "seed_worker",
    "deterministic",
    "terminate_as_interrupt",
]

log = logging.getLogger(__name__)

# cuBLAS needs a fixed workspace to be deterministic on CUDA >= 10.2 (PyTorch's reproducibility notes)
CUBLAS_WORKSPACE = ":4096:8"


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after saving a resumable checkpoint; the message says where."""


class GracefulStop:
    """Context manager: while active, SIGINT sets :attr:`requested` instead of raising.

    Training checks :attr:`requested` after each optimizer step, where the model, optimizer and
    random state are consistent, saves, and stops. A second SIGINT raises ``KeyboardInterrupt``
    at once (nothing is saved then; the last checkpoint on disk is still whole). Outside the main
    thread (where signal handlers cannot be set) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: stopping after this step (Ctrl-C again to stop at once)")

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._installed = False


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """While active, deterministic algorithms only (``torch.use_deterministic_algorithms``): an
    operation without a deterministic implementation raises instead of running. On CUDA this also
    turns off cuDNN's autotuner and sets ``CUBLAS_WORKSPACE_CONFIG`` when it is not set (it must be
    set before the first cuBLAS call, so set it in the environment when CUDA is already in use).
    The previous settings come back on exit. A no-op when ``enabled`` is false."""
    if not enabled:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    except RuntimeError as exc:
        if "deterministic implementation" not in str(exc):
            raise
        first = first_line(exc)
        raise PixelwiseError(
            f"--deterministic: {first.split(',')[0]}; this model cannot train deterministically on "
            "this device (docs/reliability.md): train without --deterministic, or on the CPU"
        ) from None
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2:]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: NumPy's and ``random``'s seeds from the worker's torch seed
    (itself from the loader's seeded generator), so every worker's randomness is repeatable."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# the files a run folder holds; a kill during a write leaves ".<name>.<random>.tmp" beside them
_RUN_FILES = ("last.ckpt", "best.ckpt", "metrics.csv", "curves.png", "config.yaml", "manifest.json")

# pixelwise._atomic.atomic_path's temporary files: ".<name>.<random, no dot>.tmp"
_TEMP_FILE = re.compile(r"\.(.+)\.[^.]+\.tmp")


def remove_stale_temp_files(
    out: Path, names: Iterable[str] = _RUN_FILES, *, folders: bool = False
) -> list[Path]:
    """Remove the temporary files of interrupted atomic writes of ``names`` (by default a run
    folder's files) in ``out``; return them. Only files of that pattern for those names are touched,
    and the folder is listed once, however many names there are. With ``folders``, temporary
    folders of that pattern (:func:`pixelwise._atomic.atomic_folder`'s) are removed too, with what
    they hold; otherwise a folder is never touched."""
    wanted = set(names)
    try:
        with os.scandir(out) as entries:
            stale = [
                Path(e.path)
                for e in entries
                if (m := _TEMP_FILE.fullmatch(e.name)) is not None
                and m.group(1) in wanted
                and (
                    e.is_file(follow_symlinks=False) or folders and e.is_dir(follow_symlinks=False)
                )
            ]
    except FileNotFoundError:
        return []
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) of an interrupted write in %s", len(stale), out)
    return sorted(stale)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does, so ``finally`` blocks
    run: an atomic write in progress removes its temporary file, and the command exits non-zero
    (130). Outside the main thread (where signal handlers cannot be set) it does nothing; the
    previous handler comes back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
