"""Measurement helpers shared by the benchmarks: interleaved repeats, medians, percentiles.

Runs on the benchmark's main thread.
"""
from __future__ import annotations

import gc
import statistics
import time
from typing import Callable

__all__ = ["median", "percentile", "per_call_ns", "interleave"]


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


def per_call_ns(loop: Callable[[int], None], calls: int) -> float:
    """ns per iteration of `loop(calls)`, one timing of the whole loop (no per-call timer overhead)."""
    gc.disable()
    try:
        start = time.perf_counter_ns()
        loop(calls)
        return (time.perf_counter_ns() - start) / calls
    finally:
        gc.enable()


def interleave(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each case once per round, `repeats` rounds, in rotating order; returns every sample."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            samples[name].append(cases[name]())
    return samples
