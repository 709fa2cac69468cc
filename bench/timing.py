"""What the speed scripts share: the median wall time of repeated calls (one function, or several
timed in turn), a stopwatch for one block, and the lines that say how, when and where a table was
measured.

Imported as ``from timing import median_seconds`` by scripts run as ``python bench/NAME.py`` (their
folder is then first on ``sys.path``; tests that load a bench script put ``bench/`` there first)."""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["interleaved_medians", "median_seconds", "report_head", "run_line", "timed"]


def interleaved_medians(
    *fns: Callable[[], Any], repeats: int, warmup: int = 1
) -> tuple[float, ...]:
    """The median seconds per call of each of ``fns``, called in turn (a, b, a, b, ...) so that a
    change in the machine's load reaches all of them alike: ``warmup`` untimed rounds, then
    ``repeats`` timed ones."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, samples in zip(fns, times, strict=True):
            with timed(samples):
                fn()
    return tuple(statistics.median(samples) for samples in times)


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; the median seconds per call."""
    return interleaved_medians(fn, repeats=repeats, warmup=warmup)[0]


@contextmanager
def timed(samples: list[float]) -> Iterator[None]:
    """Append the wall seconds the ``with`` block took to ``samples``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        samples.append(time.perf_counter() - t0)


def run_line(*versions: str) -> str:
    """``<UTC date and time>; <machine>, <threads> CPU threads; torch <version>, pixelwise <version>``
    and any further ``versions`` (``"onnxruntime 1.32.0"``), ending in a full stop."""
    import torch

    import pixelwise

    names = [f"torch {torch.__version__}", f"pixelwise {pixelwise.__version__}", *versions]
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads; {', '.join(names)}."
    )


def report_head(title: str, script: str, argv: list[str] | None, *versions: str) -> list[str]:
    """The first lines of a markdown report: ``# title``, the command that wrote it (``script`` is
    the script's ``__file__``, ``argv`` its arguments, ``None`` for ``sys.argv``) and
    :func:`run_line` with ``versions``."""
    args = sys.argv[1:] if argv is None else argv
    command = " ".join([f"python bench/{Path(script).name}", *args])
    return [f"# {title}", "", f"    {command}", "", run_line(*versions), ""]
