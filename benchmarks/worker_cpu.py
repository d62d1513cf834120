"""What the worker spends per scalar, sink by sink: the journal alone, JSON, TensorBoard, both, and
MLflow into sqlite, for 1-key and 10-key events.

Runs on the benchmark's main thread (the tracker's worker and its sink threads beside it, and for
MLflow the sink's helper process).

The worker's CPU is the GIL time a training loop loses to logging, so it is measured apart from the
caller's: each tracker is held idle (an hour's batch interval, no event-count wake-up) while N events
are logged, then the process CPU time is read across `flush()`. The caller's thread only waits in
`flush()`, so that CPU is the worker's and the sinks' threads'. The N events reach the sinks as one
batch (at most `MAX_BATCH_EVENTS`: beyond a sink's in-memory backlog of 100,000 events the lane would
read them back from the journal instead). One tracker per sink set, each with a run open through
the whole benchmark; samples interleaved.

The MLflow sink stores into sqlite from a helper process (`MLflowSink.helper_pid`): its CPU is read
from /proc (Linux; clock ticks, 10 ms) across the same flush and reported beside the in-process CPU.
Ratios are to the journal alone, the work every sink set shares.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracking import Tracker

from .harness import interleave, median

__all__ = ["run"]

KEYS10 = [f"metric_{i}" for i in range(10)]
MAX_BATCH_EVENTS = 100_000
_IDLE = {"batch_interval_s": 3600.0, "batch_max_events": 10**9, "memory_budget_bytes": 2**32}
#: events a sample logs: (1-key, 10-key), full and quick; MLflow stores ~10,000 metrics/s at best
EVENTS = {"local": (20_000, 5_000), "mlflow": (2_000, 300)}
QUICK_EVENTS = {"local": (5_000, 1_000), "mlflow": (500, 100)}
REFERENCE = "journal only"


def _sink_sets(base: Path) -> dict[str, list[Any]]:
    from tracking.sinks.mlflow import MLflowSink

    return {REFERENCE: [], "json": ["json"], "tensorboard": ["tensorboard"],
            "json+tensorboard": ["json", "tensorboard"],
            "mlflow (sqlite)": [MLflowSink(tracking_uri=f"sqlite:///{base}/worker_cpu.db")]}


def _helper_cpu_s(tracker: Tracker) -> float | None:
    """CPU seconds the tracker's MLflow helper process has used so far; None without one or /proc."""
    pid = next((getattr(s, "helper_pid", None) for s in tracker.sinks if getattr(s, "helper_pid", None)), None)
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _logger(tracker: Tracker, keys: int) -> Callable[[int, int], None]:
    log_metric, log_metrics = tracker.log_metric, tracker.log_metrics

    def one(first: int, n: int) -> None:
        for step in range(first, first + n):
            log_metric("loss", 0.5, step)

    def ten(first: int, n: int) -> None:
        values = {k: 0.5 for k in KEYS10}
        for step in range(first, first + n):
            log_metrics(values, step)

    return one if keys == 1 else ten


class _Samples:
    """Per case: in-process and helper CPU µs per scalar of each sample."""

    def __init__(self) -> None:
        self.worker: dict[str, list[float]] = {}
        self.helper: dict[str, list[float]] = {}


def _case(name: str, tracker: Tracker, keys: int, events: int, steps: list[int], out: _Samples) -> Callable[[], float]:
    log = _logger(tracker, keys)

    def measure() -> float:
        log(steps[0], events)  # untimed: the worker is idle and the caller's cost is measured elsewhere
        steps[0] += events
        helper, cpu = _helper_cpu_s(tracker), time.process_time()
        if not tracker.flush(timeout_s=600):
            raise RuntimeError(f"worker_cpu: {name}: flush did not finish within 600 s")
        scalars = events * keys
        out.worker.setdefault(name, []).append((time.process_time() - cpu) / scalars * 1e6)
        helper_after = _helper_cpu_s(tracker)
        if helper is not None and helper_after is not None:
            out.helper.setdefault(name, []).append((helper_after - helper) / scalars * 1e6)
        return 0.0
    return measure


def run(quick: bool = False) -> dict[str, Any]:
    repeats = 3 if quick else 7
    counts = QUICK_EVENTS if quick else EVENTS
    base = Path(tempfile.mkdtemp(prefix="bench-worker-cpu-"))
    trackers = {name: Tracker(sinks, base_dir=base / "runs", **_IDLE) for name, sinks in _sink_sets(base).items()}
    out = _Samples()
    cases: dict[str, Callable[[], float]] = {}
    for name, tracker in trackers.items():
        tracker.start_run("worker_cpu")
        tracker.log_metric("warm_up", 0.0)
        tracker.flush(timeout_s=120)  # every sink open (our MLflow helper started) before any sample
        steps = [0]  # one step counter per run: steps keep increasing across its samples
        per_keys = counts["mlflow" if name.startswith("mlflow") else "local"]
        for keys, events in zip((1, 10), per_keys):
            cases[f"{name}/{keys}"] = _case(f"{name}/{keys}", tracker, keys, min(events, MAX_BATCH_EVENTS), steps, out)
    try:
        interleave(cases, repeats)
    finally:
        for tracker in trackers.values():
            tracker.end_run(timeout_s=600)
        shutil.rmtree(base, ignore_errors=True)
    rows: dict[str, dict[str, Any]] = {}
    for name in trackers:
        row: dict[str, Any] = {}
        for keys in (1, 10):
            case = f"{name}/{keys}"
            row[f"us_per_scalar_{keys}"] = median(out.worker[case])
            row[f"x_journal_{keys}"] = row[f"us_per_scalar_{keys}"] / median(out.worker[f"{REFERENCE}/{keys}"])
            if case in out.helper:
                row[f"helper_us_per_scalar_{keys}"] = median(out.helper[case])
        rows[name] = row
    return {"repeats": repeats, "events": {k: list(v) for k, v in counts.items()}, "rows": rows}


def render(result: dict[str, Any]) -> str:
    local, mlflow = result["events"]["local"], result["events"]["mlflow"]
    lines = [(f"worker CPU per scalar, by sink set (process CPU across flush(); median of {result['repeats']} "
              f"interleaved samples of {local[0]:,} 1-key / {local[1]:,} 10-key events, "
              f"MLflow {mlflow[0]:,} / {mlflow[1]:,})"),
             (f"  {'sinks':<20}{'1-key µs':>10}{'× journal':>11}{'10-key µs/scalar':>18}{'× journal':>11}"
              f"{'+ helper process µs (1-key / 10-key)':>38}")]
    for name, row in result["rows"].items():
        helper = (f"{row['helper_us_per_scalar_1']:.1f} / {row['helper_us_per_scalar_10']:.1f}"
                  if "helper_us_per_scalar_1" in row else "")
        lines.append(f"  {name:<20}{row['us_per_scalar_1']:>10.2f}{row['x_journal_1']:>11.2f}"
                     f"{row['us_per_scalar_10']:>18.2f}{row['x_journal_10']:>11.2f}{helper:>38}")
    lines.append("  × journal: over the journal alone (no sinks), the work every sink set shares; the helper column is "
                 "the MLflow sink's helper process (sqlite via SQLAlchemy), outside the training process's GIL")
    return "\n".join(lines)
