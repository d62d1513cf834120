"""A sink stalled for a whole run of many events: memory stays under the budget, the loop keeps
its speed, and once released the sink catches up completely from the journal.

Runs on the benchmark's main thread. Events are logged as fast as the caller can (no training
step): the harshest case for the queue. The same loop with only the journal (no sinks) is the
reference for the logging rate.
"""
from __future__ import annotations

import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from tracking import Tracker

__all__ = ["run"]

BUDGET_BYTES = 64 * 2**20


class StalledSink:
    """Blocks in write() until released; counts what it received afterwards."""

    name = "stalled"
    stay_in_process = True  # released by an Event of this process: served on a delivery thread here

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received = 0

    def open(self, run: Any) -> None:
        return None

    def write(self, events: Sequence[tuple]) -> None:
        self.release.wait()
        self.received += len(events)

    def flush(self) -> None:
        pass

    def close(self, status: str) -> None:
        pass


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log(tracker: Tracker, n: int) -> float:
    log_metric = tracker.log_metric
    start = time.perf_counter()
    for i in range(n):
        log_metric("loss", 0.5, i)
    return n / (time.perf_counter() - start)


def run(quick: bool = False) -> dict[str, Any]:
    n = 100_000 if quick else 10_000_000
    base = Path(tempfile.mkdtemp(prefix="bench-stall-"))
    reference = Tracker([], base_dir=base, memory_budget_bytes=BUDGET_BYTES)
    reference.start_run("reference")
    reference_rate = _log(reference, n)
    reference.close(timeout_s=600)

    rss_before = _rss_mib()
    sink = StalledSink()
    tracker = Tracker([sink], base_dir=base, memory_budget_bytes=BUDGET_BYTES, end_timeout_s=3600)
    tracker.start_run("stalled")
    rate = _log(tracker, n)
    tracker.flush(timeout_s=1)  # returns False: the stalled sink holds it; the journal has everything
    rss_peak = _rss_mib()
    undelivered = tracker.stats().undelivered["stalled"]
    released = time.perf_counter()
    sink.release.set()
    report = tracker.end_run(timeout_s=3600)
    catch_up_s = time.perf_counter() - released
    tracker.close()
    return {
        "events": n, "budget_mib": BUDGET_BYTES / 2**20, "rss_growth_mib": rss_peak - rss_before,
        "log_rate_per_s": rate, "reference_rate_per_s": reference_rate, "x_reference": rate / reference_rate,
        "undelivered_while_stalled": undelivered, "catch_up_s": catch_up_s, "delivered": sink.received,
        "targets": {
            "memory growth under the budget": rss_peak - rss_before < BUDGET_BYTES / 2**20,
            "the stalled sink catches up completely": report.complete and sink.received == n,
        },
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"one sink stalled for a whole run of {result['events']:,} events (memory budget {result['budget_mib']:.0f} MiB)",
             f"  logging rate: {result['log_rate_per_s']:,.0f}/s = {result['x_reference']:.2f}x the same loop with no sink",
             f"  peak RSS growth: {result['rss_growth_mib']:.0f} MiB; undelivered while stalled: {result['undelivered_while_stalled']:,}",
             f"  after release: caught up {result['delivered']:,} events in {result['catch_up_s']:.1f} s"]
    for target, ok in result["targets"].items():
        lines.append(f"  target {target}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)
