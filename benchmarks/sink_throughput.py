"""End-to-end throughput of the sinks next to the tools users would call directly, in one run.

Runs on the benchmark's main thread (our delivery agent, or MLflow's own threads, beside it).

- MLflow: metrics/s from the first timed log call until everything is stored (`end_run` returned),
  for our MLflow sink, for `MlflowClient.log_batch` with 1,000-metric batches (the store's
  ceiling), and for `mlflow.log_metrics(..., synchronous=False)` until `mlflow.end_run()`; into
  sqlite and into a file store. Each starts its clock with its store ready, as `log_batch`'s client
  is: ours after a first metric was flushed, i.e. after the sink's helper process started and the
  MLflow run was created — that start-up (~3 s, mostly importing MLflow) is reported separately.
- TensorBoard: scalars/s until the file is closed, our sink vs tensorboardX `add_scalar`.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tracking import Tracker

from .harness import interleave, log_batch_peer, median

__all__ = ["run"]

KEYS = [f"metric_{i}" for i in range(10)]


def _stores(base: Path) -> dict[str, Callable[[str], str]]:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return {
        "sqlite": lambda tag: f"sqlite:///{base}/{tag}-{time.monotonic_ns()}.db",
        "file": lambda tag: f"file:{base}/store-{tag}-{time.monotonic_ns()}",
    }


_open_seconds: list[float] = []


def _ours_mlflow(uri: str, base: Path, n_steps: int) -> float:
    from tracking.sinks.mlflow import MLflowSink

    tracker = Tracker([MLflowSink(tracking_uri=uri)], base_dir=base / "runs", end_timeout_s=600)
    opening = time.perf_counter()
    tracker.start_run("throughput")
    tracker.log_metric("warm_up", 0.0)
    tracker.flush(timeout_s=120)  # returns once the sink has opened and stored the first point
    _open_seconds.append(time.perf_counter() - opening)
    start = time.perf_counter()
    for step in range(n_steps):
        tracker.log_metrics({k: 0.5 for k in KEYS}, step=step)
    report = tracker.end_run(timeout_s=600)
    elapsed = time.perf_counter() - start
    tracker.close()
    assert report.complete, report.summary()
    return n_steps * len(KEYS) / elapsed


def _log_batch(uri: str, n_steps: int) -> float:
    _, seconds = log_batch_peer(uri, n_steps, KEYS)
    return n_steps * len(KEYS) / seconds


def _mlflow_async(uri: str, n_steps: int) -> float:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(f"async-{time.monotonic_ns()}")
    start = time.perf_counter()
    with mlflow.start_run():
        for step in range(n_steps):
            mlflow.log_metrics({k: 0.5 for k in KEYS}, step=step, synchronous=False)
    return n_steps * len(KEYS) / (time.perf_counter() - start)


def _ours_tensorboard(base: Path, n_steps: int) -> float:
    tracker = Tracker(["tensorboard"], base_dir=base / "tb-runs")
    tracker.start_run("throughput")
    start = time.perf_counter()
    for step in range(n_steps):
        tracker.log_metrics({k: 0.5 for k in KEYS}, step=step)
    tracker.end_run(timeout_s=600)
    rate = n_steps * len(KEYS) / (time.perf_counter() - start)
    tracker.close()
    return rate


def _tensorboardx(base: Path, n_steps: int) -> float:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(base / f"tbx-{time.monotonic_ns()}"))
    start = time.perf_counter()
    for step in range(n_steps):
        for k in KEYS:
            writer.add_scalar(k, 0.5, step)
    writer.close()
    return n_steps * len(KEYS) / (time.perf_counter() - start)


def run(quick: bool = False) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-sinks-"))
    steps = 200 if quick else 3000  # x 10 metrics
    async_steps = 30 if quick else 300  # MLflow's own async mode delivers ~700 metrics/s
    repeats = 1 if quick else 3
    stores = _stores(base)
    cases: dict[str, Callable[[], float]] = {}
    for store, uri in stores.items():
        cases[f"mlflow/{store}/ours"] = lambda s=store: _ours_mlflow(stores[s]("ours"), base, steps)
        cases[f"mlflow/{store}/log_batch"] = lambda s=store: _log_batch(stores[s]("lb"), steps)
        cases[f"mlflow/{store}/mlflow_async"] = lambda s=store: _mlflow_async(stores[s]("async"), async_steps)
    cases["tensorboard/ours"] = lambda: _ours_tensorboard(base, steps * 10)
    cases["tensorboard/tensorboardX"] = lambda: _tensorboardx(base, steps)
    samples = interleave(cases, repeats)
    rows = {name: {"per_s": median(v)} for name, v in samples.items()}
    for store in stores:
        ceiling = rows[f"mlflow/{store}/log_batch"]["per_s"]
        for peer in ("ours", "log_batch", "mlflow_async"):
            rows[f"mlflow/{store}/{peer}"]["x_log_batch"] = rows[f"mlflow/{store}/{peer}"]["per_s"] / ceiling
    tbx = rows["tensorboard/tensorboardX"]["per_s"]
    for name in ("tensorboard/ours", "tensorboard/tensorboardX"):
        rows[name]["x_tensorboardX"] = rows[name]["per_s"] / tbx
    return {
        "metrics_per_case": steps * 10, "repeats": repeats, "rows": rows,
        "mlflow_sink_open_s": median(_open_seconds),
        "targets": {f"mlflow sink >= 0.9x log_batch ({store})": rows[f"mlflow/{store}/ours"]["x_log_batch"] >= 0.9
                    for store in stores},
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"sink throughput, end to end ({result['metrics_per_case']} metrics a case, median of {result['repeats']})",
             f"  {'case':<30}{'per s':>10}{'ratio':>10}"]
    for name, row in result["rows"].items():
        ratio = row.get("x_log_batch", row.get("x_tensorboardX"))
        unit = "× log_batch" if "x_log_batch" in row else "× tensorboardX"
        lines.append(f"  {name:<30}{row['per_s']:>10,.0f}{ratio:>10.2f} {unit}")
    lines.append(f"  our MLflow sink's start-up (helper process + run creation), not in the rates: "
                 f"{result['mlflow_sink_open_s']:.1f} s")
    for target, ok in result["targets"].items():
        lines.append(f"  target {target}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)
