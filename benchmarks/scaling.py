"""How per-event costs change with the length of a run (10^4 to 10^7 events), and what a queued
event weighs in memory.

Runs on the benchmark's main thread (the tracker's writer and agent-link threads beside it; its
delivery agent in a process of its own).

Runs: JSON + TensorBoard sinks, default tracker settings (64 MiB queue budget, "block" policy, 50 ms
batch interval), 1-key `log_metric` at increasing steps, called as fast as the caller can (no
training step in between): the writer runs at the same time, and the loop is held back whenever
the queue is full, as a real run that logs faster than the journal is written would be.

- caller CPU per call: the main thread's CPU time (`time.thread_time`) per call, median over
  chunks of `CHUNK` calls: what the log call itself costs, without the time the thread waited for
  the GIL or for room in the queue.
- loop wall time per call: the whole loop's wall time / events (those waits included).
- writer CPU per event: (process CPU time - the main thread's CPU time) / events, from the first
  call through the final `flush()`: the writer thread and the agent-link thread.
- agent CPU per event: the delivery agent process's CPU (from /proc) over the same span / events.
- caught up: whether that flush finished within `FLUSH_DEADLINE_S` of the last call; if not, the
  events some sink still lacked then, and the agent figure is a lower bound ("≥"). A sink that
  falls more than `max_sink_backlog_events` behind catches up from the journal, which is slower.
- RSS growth: resident memory after the flush minus before the first call (Linux only).
Ratios are to the 10^4-event run. Sizes are interleaved, `repeats` runs each; 10^7 runs once
(minutes a run on 2 cores) and its caller figure is the median of its 10,000 chunks. The queued-
memory measurement runs first, so no sink thread left over from a run allocates during it.

Memory per queued event: the writer is held idle (an hour's batch interval and no event-count
wake-up) while N events are logged; the growth of tracemalloc's traced memory / N, and in a
separate pass the growth of RSS / N, for a 1-key `log_metric` and a 10-key `log_metrics` with fresh
float values (as `loss.item()` gives), next to `tracking.recorder.queue.event_bytes`, the estimate the queue
turns its memory budget into a length with. (A sink that blocks would not keep events queued: the
writer journals them whatever the sinks do, so the writer itself is held instead.)
"""
from __future__ import annotations

import gc
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracking import Tracker
from tracking.journal.events import SCALARS
from tracking.recorder.queue import event_bytes

from .harness import cpu_delta, descendants_cpu, interleave, median

__all__ = ["run"]

SINKS = ("json", "tensorboard")
FULL_SIZES, QUICK_SIZES = (10**4, 10**5, 10**6, 10**7), (10**4, 10**5)
#: sizes run once in full mode (one run takes minutes)
ONCE = (10**7,)
CHUNK = 1000
#: how long a run's sinks may take to catch up after its last call before it is reported as behind
FLUSH_DEADLINE_S = 60.0
#: how long end_run may then take (a sink still behind is left to the journal: the run is not measured)
END_DEADLINE_S = 30.0
KEYS10 = [f"metric_{i}" for i in range(10)]
MEMORY_EVENTS, QUICK_MEMORY_EVENTS = 100_000, 20_000
_IDLE = {"batch_interval_s": 3600.0, "batch_max_events": 10**9, "memory_budget_bytes": 2**32}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# -- runs of increasing length ----------------------------------------------------------------------

def _log_chunks(tracker: Tracker, events: int) -> list[float]:
    """Log `events` 1-key metrics; returns the caller's CPU ns per call of each chunk."""
    log_metric, cpu_ns = tracker.log_metric, time.thread_time_ns
    per_call = []
    for first in range(0, events, CHUNK):
        start = cpu_ns()
        for step in range(first, first + CHUNK):
            log_metric("loss", 0.5, step)
        per_call.append((cpu_ns() - start) / CHUNK)
    return per_call


def _one_run(base: Path, events: int) -> dict[str, Any]:
    tracker = Tracker(list(SINKS), base_dir=base)
    tracker.start_run(f"scaling_{events}")
    tracker.log_metric("warm_up", 0.0)
    tracker.flush(timeout_s=60)  # the sinks are open before the clocks start
    gc.collect()
    rss = _rss_bytes()
    agent = descendants_cpu()
    process_cpu, caller_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
    chunks = _log_chunks(tracker, events)
    wall = time.perf_counter() - wall
    caught_up = tracker.flush(timeout_s=FLUSH_DEADLINE_S)
    caller_cpu = time.thread_time() - caller_cpu
    writer_cpu = time.process_time() - process_cpu - caller_cpu
    agent_cpu = cpu_delta(agent, descendants_cpu())
    rss_after = _rss_bytes()
    stats = tracker.stats()  # its `undelivered` counts journaled events only: add what is still queued
    behind = stats.queue_depth + max(stats.undelivered.values(), default=0)
    tracker.close(timeout_s=END_DEADLINE_S)
    return {"caller_cpu_ns": median(chunks), "wall_ns": wall / events * 1e9, "writer_cpu_us": writer_cpu / events * 1e6,
            "agent_cpu_us": agent_cpu / events * 1e6,
            "rss_growth_mib": (rss_after - rss) / 2**20 if rss is not None and rss_after is not None else float("nan"),
            "caught_up": caught_up, "undelivered_at_deadline": 0 if caught_up else behind}


_MEDIAN_FIELDS = ("caller_cpu_ns", "wall_ns", "writer_cpu_us", "agent_cpu_us", "rss_growth_mib")


def _runs(base: Path, sizes: tuple[int, ...], repeats: int) -> dict[str, dict[str, Any]]:
    samples: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}

    def case(n: int) -> Callable[[], float]:
        def measure() -> float:
            samples[n].append(_one_run(base, n))
            return 0.0
        return measure

    interleave({str(n): case(n) for n in sizes if n not in ONCE}, repeats)
    for n in sizes:
        if n in ONCE:
            samples[n].append(_one_run(base, n))
    rows = {}
    for n, runs in samples.items():
        row: dict[str, Any] = {"events": n, "runs": len(runs)}
        row.update({field: median([r[field] for r in runs]) for field in _MEDIAN_FIELDS})
        # one run that did not catch up makes the agent figure a lower bound: say so
        row["caught_up"] = all(r["caught_up"] for r in runs)
        row["undelivered_at_deadline"] = max(r["undelivered_at_deadline"] for r in runs)
        rows[f"10^{round(math.log10(n))}"] = row
    first = next(iter(rows.values()))
    for row in rows.values():
        for field in ("caller_cpu_ns", "wall_ns", "writer_cpu_us", "agent_cpu_us"):
            row[f"{field}_x_first"] = row[field] / first[field]
    return rows


# -- memory per queued event ------------------------------------------------------------------------

def _log_1key(tracker: Tracker, n: int) -> None:
    log_metric = tracker.log_metric
    for step in range(n):
        log_metric("loss", step + 0.5, step)


def _log_10key(tracker: Tracker, n: int) -> None:
    log_metrics = tracker.log_metrics
    for step in range(n):
        log_metrics({k: step + 0.5 for k in KEYS10}, step)


LOGGERS = {"1-key log_metric": _log_1key, "10-key log_metrics": _log_10key}


def _idle_tracker(base: Path) -> Tracker:
    tracker = Tracker([], base_dir=base, **_IDLE)  # the journal only: nothing else touches the events
    tracker.start_run("queued_memory")
    gc.collect()
    return tracker


def _traced_growth(base: Path, kind: str, n: int) -> float:
    """Bytes per event that `n` queued events add to tracemalloc's traced memory."""
    tracker = _idle_tracker(base)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    LOGGERS[kind](tracker, n)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    tracker.close(timeout_s=600)
    return grown / n


def rss_growth_child(base: str, kind: str, n: int) -> None:
    """In a fresh interpreter: print the RSS growth per event that `n` queued events cause."""
    tracker = _idle_tracker(Path(base))
    before = _rss_bytes()
    LOGGERS[kind](tracker, n)
    after = _rss_bytes()
    print(float("nan") if before is None or after is None else (after - before) / n)
    tracker.close(timeout_s=600)


def _rss_growth(base: Path, kind: str, n: int) -> float:
    """RSS growth per queued event, measured in a child: this process reuses memory it freed before."""
    code = f"from benchmarks.scaling import rss_growth_child; rss_growth_child({str(base)!r}, {kind!r}, {n})"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scaling: the RSS child failed ({done.returncode}): {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def _estimates() -> dict[str, int]:
    """What `tracking.recorder.queue.event_bytes` says, on events shaped as the log calls build them."""
    return {"1-key log_metric": event_bytes((SCALARS, ("loss",), (7.5,), 7, time.time())),
            "10-key log_metrics": event_bytes((SCALARS, tuple(KEYS10), tuple(7.5 + i for i in range(10)), 7,
                                               time.time()))}


def _queued_memory(base: Path, n: int, repeats: int) -> dict[str, dict[str, float]]:
    cases: dict[str, Callable[[], float]] = {}
    for kind in LOGGERS:
        cases[f"{kind}/traced"] = lambda kind=kind: _traced_growth(base, kind, n)
        cases[f"{kind}/rss"] = lambda kind=kind: _rss_growth(base, kind, n)
    samples = interleave(cases, repeats)
    estimates = _estimates()
    rows = {}
    for kind in LOGGERS:
        traced, rss = median(samples[f"{kind}/traced"]), median(samples[f"{kind}/rss"])
        rows[kind] = {"traced_bytes": traced, "rss_bytes": rss, "estimate_bytes": estimates[kind],
                      "estimate_x_traced": estimates[kind] / traced, "estimate_x_rss": estimates[kind] / rss}
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    repeats = 3
    memory_events = QUICK_MEMORY_EVENTS if quick else MEMORY_EVENTS
    base = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    try:
        memory = _queued_memory(base, memory_events, repeats)
        rows = _runs(base, sizes, repeats)
    finally:
        shutil.rmtree(base, ignore_errors=True)  # a 10^7-event run leaves ~1 GB of journal and event file
    return {"sinks": list(SINKS), "repeats": repeats, "once": [n for n in ONCE if n in sizes], "chunk": CHUNK,
            "flush_deadline_s": FLUSH_DEADLINE_S, "rows": rows, "memory_events": memory_events, "queued_memory": memory}


def render(result: dict[str, Any]) -> str:
    once = f"; {', '.join(f'{n:,}' for n in result['once'])} once" if result["once"] else ""
    lines = [(f"scaling with run length (sinks: {', '.join(result['sinks'])}; 1-key log_metric as fast as the "
              f"caller can; median of {result['repeats']} interleaved runs{once})"),
             (f"  {'events':>12}{'caller CPU ns/call':>20}{'×':>6}{'loop wall ns/call':>19}{'×':>6}"
              f"{'writer CPU µs/event':>21}{'agent CPU µs/event':>20}{'×':>7}{'RSS growth MiB':>16}  caught up")]
    for row in result["rows"].values():
        bound = "" if row["caught_up"] else "≥"
        caught_up = "yes" if row["caught_up"] else (
            f"NO: {row['undelivered_at_deadline']:,} events undelivered {result['flush_deadline_s']:.0f} s after the last call")
        lines.append(f"  {row['events']:>12,}{row['caller_cpu_ns']:>20.0f}{row['caller_cpu_ns_x_first']:>6.2f}"
                     f"{row['wall_ns']:>19.0f}{row['wall_ns_x_first']:>6.2f}"
                     f"{row['writer_cpu_us']:>21.2f}{bound + format(row['agent_cpu_us'], '.2f'):>20}"
                     f"{bound + format(row['agent_cpu_us_x_first'], '.2f'):>7}"
                     f"{row['rss_growth_mib']:>16.1f}  {caught_up}")
    lines.append(f"  ×: over the {next(iter(result['rows'].values()))['events']:,}-event run; caller CPU: median of "
                 f"{result['chunk']:,}-call chunks of the main thread's CPU time")
    lines.append(f"  memory per queued event (writer held idle, {result['memory_events']:,} events, fresh float values):")
    lines.append(f"  {'event':<22}{'tracemalloc B':>15}{'RSS B':>9}{'event_bytes() B':>17}"
                 f"{'estimate / traced':>19}{'estimate / RSS':>16}")
    for kind, m in result["queued_memory"].items():
        lines.append(f"  {kind:<22}{m['traced_bytes']:>15.0f}{m['rss_bytes']:>9.0f}{m['estimate_bytes']:>17}"
                     f"{m['estimate_x_traced']:>19.2f}{m['estimate_x_rss']:>16.2f}")
    return "\n".join(lines)
