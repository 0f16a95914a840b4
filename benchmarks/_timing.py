"""Timing helpers shared by the benchmarks.

Both sides of a comparison are measured in the same process, interleaved
round by round, and the best round counts: the minimum is the figure least
disturbed by other work on the machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

ROUND_TARGET_S = 0.05


def calibrate(fn: Callable[[], object], target_s: float = ROUND_TARGET_S) -> int:
    """Calls per round so that one round takes about ``target_s``."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= target_s / 10 or number >= 1 << 22:
            return max(1, int(number * target_s / max(elapsed, 1e-9)))
        number *= 4


def best_ops_per_s(fns: list[Callable[[], object]], rounds: int) -> list[float]:
    """Ops/s of each function: best of ``rounds`` interleaved rounds."""
    numbers = [calibrate(fn) for fn in fns]
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for index, (fn, number) in enumerate(zip(fns, numbers, strict=True)):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            elapsed = time.perf_counter() - start
            best[index] = max(best[index], number / elapsed)
    return best
