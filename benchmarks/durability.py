"""Time until 100,000 metrics are durable: from the first log call until every value is on disk and
readable, ours next to what users would call instead, in one run.

Runs on the benchmark's main thread (our writer thread, our delivery agent and its MLflow helper
process, and the peers' own threads beside it).

Every case logs 10 keys a step. Its clock starts at the first log call with its store ready (ours:
after a first metric went through, so that our MLflow sink's helper process and MLflow run exist,
as the peers' runs do; that start-up is reported apart) and stops when the call that promises
durability returns:

- JSON + TensorBoard: ours async and ours sync (`end_run()`), tensorboardX's and torch's
  `SummaryWriter` (`add_scalar` for each value, then `close()`).
- MLflow into sqlite (a fresh database file per case and repeat): ours async and ours sync
  (`end_run()`), `MlflowClient.log_batch` with 1,000 metrics a call (then `set_terminated`), and
  `mlflow.log_metrics(synchronous=False)` then `mlflow.flush_async_logging()` and `end_run()`.

After each case, off the clock, the values are counted where a reader finds them: our journal,
`step_metrics.csv` and TensorBoard file, the peers' event files (tensorboard's own event-file loader;
its EventAccumulator would keep a 10,000-point sample per tag, not every point), and MLflow's
`get_metric_history`. A case that lost values says so in its row.

The two slowest cases (MLflow's own async logging and our sync mode into MLflow, ~500-1,000
metrics/s here) log fewer metrics (`SHORTENED`), so the suite runs in minutes rather than a quarter
of an hour; their rows say how many they logged, and their ratio compares time per metric (MLflow's
async logging has ~1 s of fixed latency at the end, which weighs 5x more over 20,000 metrics than it
would over 100,000). `--quick` logs 10,000 metrics once and leaves out our sync mode into MLflow.
"""
from __future__ import annotations

import csv
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracking import Tracker
from tracking.journal.events import METRICS
from tracking.journal import read_journal

from .harness import interleave, log_batch_peer, median

__all__ = ["run"]

KEYS = [f"metric_{i}" for i in range(10)]
FULL_METRICS, QUICK_METRICS = 100_000, 10_000
TB_GROUP, MLFLOW_GROUP = "json+tensorboard", "mlflow (sqlite)"
REFERENCE = "ours async"
MLFLOW_ASYNC = "mlflow.log_metrics(synchronous=False)"
#: what the slowest cases log instead: (full, quick); None: left out of --quick, where a second
#: start of our MLflow helper (~4 s) would take the smoke run past 20 s
SHORTENED: dict[str, tuple[int, int | None]] = {
    f"{MLFLOW_GROUP} / ours sync": (5_000, None),
    f"{MLFLOW_GROUP} / {MLFLOW_ASYNC}": (20_000, 1_000),
}

Found = dict[str, int]  # store -> values of KEYS found there


@dataclass(frozen=True)
class _Case:
    group: str
    name: str
    steps: int
    measure: Callable[[int], tuple[float, Found]]  # steps -> (seconds, found)


# -- counting what a reader finds (off the clock) ---------------------------------------------------

def _count_journal(run_dir: Path) -> int:
    return sum(1 for _, event in read_journal(run_dir).events if event[0] == METRICS for key in event[1] if key in KEYS)


def _count_csv(run_dir: Path) -> int:
    with open(run_dir / "step_metrics.csv", newline="") as fh:
        return sum(1 for row in csv.DictReader(fh) for key in KEYS if row.get(key))


def _count_tfevents(logdir: Path) -> int:
    from tensorboard.backend.event_processing import event_file_loader

    return sum(1 for path in sorted(logdir.rglob("events.out.tfevents*"))
               for event in event_file_loader.LegacyEventFileLoader(str(path)).Load()
               for value in event.summary.value if value.tag in KEYS)


def _count_mlflow(uri: str, run_id: str) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return sum(len(client.get_metric_history(run_id, key)) for key in KEYS)


def _sqlite_uri(base: Path, tag: str) -> str:
    return f"sqlite:///{base}/{tag}-{time.monotonic_ns()}.db"


# -- ours -------------------------------------------------------------------------------------------

_mlflow_open_s: list[float] = []


def _ours(base: Path, mode: str, with_mlflow: bool, steps: int) -> tuple[float, Found]:
    from tracking.sinks.mlflow import MLflowSink

    uri = _sqlite_uri(base, f"ours-{mode}") if with_mlflow else None
    sinks = [MLflowSink(tracking_uri=uri)] if uri else ["json", "tensorboard"]
    tracker = Tracker(sinks, mode=mode, base_dir=base / "runs", end_timeout_s=600)
    opening = time.perf_counter()
    tracker.start_run(f"durability_{mode}")
    tracker.log_metric("warm_up", 0.0)
    tracker.flush(timeout_s=120)  # returns once every sink is open and stored the first point
    if uri:
        _mlflow_open_s.append(time.perf_counter() - opening)
    log_metrics = tracker.log_metrics
    start = time.perf_counter()
    for step in range(steps):
        log_metrics({k: 0.5 for k in KEYS}, step=step)
    tracker.end_run(timeout_s=600)
    seconds = time.perf_counter() - start
    tracker.close()
    run_dir = tracker.get_run_dir()
    found = {"journal": _count_journal(run_dir)}
    if uri:
        found["mlflow"] = _count_mlflow(uri, json.loads((run_dir / "meta.json").read_text())["mlflow_run_id"])
    else:
        found.update(csv=_count_csv(run_dir), tensorboard=_count_tfevents(run_dir / "tensorboard"))
    return seconds, found


# -- peers ------------------------------------------------------------------------------------------

def _summary_writer(make_writer: Callable[[str], Any], logdir: Path, steps: int) -> tuple[float, Found]:
    writer = make_writer(str(logdir))
    add_scalar = writer.add_scalar
    start = time.perf_counter()
    for step in range(steps):
        for k in KEYS:
            add_scalar(k, 0.5, step)
    writer.close()
    seconds = time.perf_counter() - start
    return seconds, {"event file": _count_tfevents(logdir)}


def _tensorboardx(base: Path, steps: int) -> tuple[float, Found]:
    from tensorboardX import SummaryWriter

    return _summary_writer(SummaryWriter, base / f"tbx-{time.monotonic_ns()}", steps)


def _torch_tensorboard(base: Path, steps: int) -> tuple[float, Found]:
    from torch.utils.tensorboard import SummaryWriter

    return _summary_writer(SummaryWriter, base / f"torch-tb-{time.monotonic_ns()}", steps)


def _log_batch(base: Path, steps: int) -> tuple[float, Found]:
    uri = _sqlite_uri(base, "log-batch")
    run_id, seconds = log_batch_peer(uri, steps, KEYS)
    return seconds, {"mlflow": _count_mlflow(uri, run_id)}


def _mlflow_async(base: Path, steps: int) -> tuple[float, Found]:
    import mlflow

    uri = _sqlite_uri(base, "mlflow-async")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(f"async-{time.monotonic_ns()}")
    run_id = mlflow.start_run().info.run_id
    start = time.perf_counter()
    for step in range(steps):
        mlflow.log_metrics({k: 0.5 for k in KEYS}, step=step, synchronous=False)
    mlflow.flush_async_logging()
    mlflow.end_run()
    seconds = time.perf_counter() - start
    return seconds, {"mlflow": _count_mlflow(uri, run_id)}


def _cases(base: Path, metrics: int, quick: bool) -> dict[str, _Case]:
    measures: list[tuple[str, str, Callable[[int], tuple[float, Found]]]] = [
        (TB_GROUP, "ours async", lambda n: _ours(base, "async", False, n)),
        (TB_GROUP, "ours sync", lambda n: _ours(base, "sync", False, n)),
        (TB_GROUP, "tensorboardX SummaryWriter", lambda n: _tensorboardx(base, n)),
        (TB_GROUP, "torch SummaryWriter", lambda n: _torch_tensorboard(base, n)),
        (MLFLOW_GROUP, "ours async", lambda n: _ours(base, "async", True, n)),
        (MLFLOW_GROUP, "ours sync", lambda n: _ours(base, "sync", True, n)),
        (MLFLOW_GROUP, "MlflowClient.log_batch (1,000 a call)", lambda n: _log_batch(base, n)),
        (MLFLOW_GROUP, MLFLOW_ASYNC, lambda n: _mlflow_async(base, n)),
    ]
    cases = {}
    for group, name, measure in measures:
        full, quick_metrics = SHORTENED.get(f"{group} / {name}", (metrics, metrics))
        count = quick_metrics if quick else full
        if count is not None:
            cases[f"{group} / {name}"] = _Case(group, name, count // len(KEYS), measure)
    return cases


# -- the benchmark ----------------------------------------------------------------------------------

def _row(case: _Case, seconds: list[float], found: list[Found]) -> dict[str, Any]:
    expected = case.steps * len(KEYS)
    least = {store: min(f[store] for f in found) for store in found[0]}
    return {"group": case.group, "case": case.name, "metrics": expected, "seconds": median(seconds),
            "per_s": expected / median(seconds), "found": least,
            "complete": all(count == expected for f in found for count in f.values())}


def run(quick: bool = False) -> dict[str, Any]:
    metrics = QUICK_METRICS if quick else FULL_METRICS
    repeats = 1 if quick else 3
    base = Path(tempfile.mkdtemp(prefix="bench-durable-"))
    cases = _cases(base, metrics, quick)
    found: dict[str, list[Found]] = {name: [] for name in cases}

    def timed(name: str) -> Callable[[], float]:
        def measure() -> float:
            seconds, counts = cases[name].measure(cases[name].steps)
            found[name].append(counts)
            return seconds
        return measure

    _mlflow_open_s.clear()
    try:
        samples = interleave({name: timed(name) for name in cases}, repeats)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rows = {name: _row(case, samples[name], found[name]) for name, case in cases.items()}
    for row in rows.values():
        reference = rows[f"{row['group']} / {REFERENCE}"]
        row["x_ours_async"] = (row["seconds"] / row["metrics"]) / (reference["seconds"] / reference["metrics"])
    return {
        "metrics": metrics, "repeats": repeats, "rows": rows,
        "mlflow_sink_open_s": median(_mlflow_open_s),
        "checks": {"every logged value found after each case": all(row["complete"] for row in rows.values())},
    }


def _found_text(row: dict[str, Any]) -> str:
    if row["complete"]:
        return f"all ({', '.join(row['found'])})"
    short = [f"{store} {count:,}" for store, count in row["found"].items() if count != row["metrics"]]
    return f"INCOMPLETE: {'; '.join(short)} of {row['metrics']:,}"


def render(result: dict[str, Any]) -> str:
    lines = [(f"time until {result['metrics']:,} metrics are durable (first log call -> on disk and readable; "
              f"10 keys a step; median of {result['repeats']}, interleaved)"),
             f"  {'sinks / case':<58}{'metrics':>9}{'seconds':>9}{'per s':>10}{'× ours async':>14}  found"]
    for name, row in result["rows"].items():
        lines.append(f"  {name:<58}{row['metrics']:>9,}{row['seconds']:>9.2f}{row['per_s']:>10,.0f}"
                     f"{row['x_ours_async']:>14.2f}  {_found_text(row)}")
    lines.append("  × ours async: time per metric over ours async's in the same sinks group (>1: slower than ours); "
                 f"rows with fewer than {result['metrics']:,} metrics are the slowest cases, logged shorter")
    lines.append(f"  our MLflow sink's start-up (helper process + MLflow run), before the clock: "
                 f"{result['mlflow_sink_open_s']:.1f} s")
    for check, ok in result["checks"].items():
        lines.append(f"  check {check}: {'passed' if ok else 'FAILED (see the found column)'}")
    return "\n".join(lines)
