"""The timer the speed scripts share: the median wall time of repeated calls after warm-up calls.

Imported as ``from timing import median_seconds`` by scripts run as ``python bench/NAME.py`` (their
folder is then first on ``sys.path``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; the median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
