"""Measurement helpers shared by the benchmarks: interleaved repeats, medians, percentiles.

Runs on the benchmark's main thread.
"""
from __future__ import annotations

import gc
import os
import statistics
import time
from typing import Callable

__all__ = ["median", "percentile", "per_call_ns", "interleave", "log_batch_peer", "descendants_cpu", "cpu_delta",
           "cmdline"]


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


def _proc_cpu(pid: int | str) -> tuple[int, float] | None:
    """(ppid, utime + stime in s) of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def descendants_cpu(extra: tuple[int, ...] = ()) -> dict[int, float]:
    """CPU seconds so far of every process descended from this one (and of `extra` pids), from /proc:
    the delivery agent, its MLflow helper, a peer's ingest process."""
    me = os.getpid()
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    for name in names:
        if name.isdigit():
            got = _proc_cpu(name)
            if got is not None:
                parent[int(name)], cpu[int(name)] = got
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [me]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    found.update(p for p in extra if p in cpu and p != me)
    return {pid: cpu[pid] for pid in found}


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
