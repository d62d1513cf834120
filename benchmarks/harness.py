"""Measurement helpers shared by the benchmarks: interleaved repeats, medians, percentiles.

Runs on the benchmark's main thread.
"""
from __future__ import annotations

import gc
import statistics
import time
from typing import Callable

__all__ = ["median", "percentile", "per_call_ns", "interleave", "log_batch_peer"]


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


def log_batch_peer(uri: str, steps: int, keys: list[str]) -> tuple[str, float]:
    """The `MlflowClient.log_batch` peer: a new run in a new experiment at `uri`, then `steps` steps
    of `keys` at 1,000 metrics a request (MLflow's limit), then the run terminated.

    Returns (MLflow run id, seconds from the first metric built until the run was terminated).
    """
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment(f"lb-{time.monotonic_ns()}")).info.run_id
    start = time.perf_counter()
    batch: list[Metric] = []
    for step in range(steps):
        ts = int(time.time() * 1000)
        batch.extend(Metric(k, 0.5, ts, step) for k in keys)
        if len(batch) >= 1000:
            client.log_batch(run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
    client.set_terminated(run_id)
    return run_id, time.perf_counter() - start
