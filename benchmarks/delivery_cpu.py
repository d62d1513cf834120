"""CPU per logged scalar, by sink set: in the training process (all its threads: the caller, the
writer thread, the agent link) and in the delivery processes (the agent, and its MLflow helper).

Runs on the benchmark's main thread; the tracker's writer thread and link thread beside it, its
agent process (and the agent's MLflow helper process) beside the process.

A sample logs N steps as fast as the caller can (no training step in between). The training
process's CPU is `time.process_time()` from the first call until the writer has journaled every
event (what the training process does for them ends there); the delivery processes' CPU is read
from /proc (every process descended from this one: clock ticks, 10 ms) from the first call until
a `flush()` says every sink has them. The
step pattern is the tiny loop's (`benchmarks.tiny_loop`): `log_metric` of a 0-d CPU tensor and
`log_metrics` of 9 floats, 10 scalars; 1-key and 10-key events are measured too. One tracker per
sink set, a run open through the whole benchmark; samples interleaved. Ratios are to the journal
alone (no sink, so no agent), the work every sink set shares.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracking import Tracker

from .harness import cpu_delta, descendants_cpu, interleave, median
from .tiny_loop import _Floor

__all__ = ["run", "render"]

KEYS9 = [f"train/k{i}" for i in range(9)]
KEYS10 = [f"metric_{i}" for i in range(10)]
PATTERNS = ("step", "1-key", "10-key")  # "step": the tiny loop's 1 tensor + 9 floats
#: steps a sample logs, local sinks and with MLflow (~10,000 metrics/s into sqlite at best)
STEPS = {"local": 20_000, "mlflow": 2_000}
QUICK_STEPS = {"local": 2_000, "mlflow": 200}
REFERENCE = "journal only"
FLOOR = "floor (deque + orjson thread)"


def _sink_sets(base: Path) -> dict[str, list[Any]]:
    from tracking.sinks.mlflow import MLflowSink

    return {REFERENCE: [], "json": ["json"], "tensorboard": ["tensorboard"], "json+tensorboard": ["json", "tensorboard"],
            "json+tensorboard+mlflow": ["json", "tensorboard", MLflowSink(tracking_uri=f"sqlite:///{base}/delivery.db")]}


def _logger(tracker: Tracker, pattern: str) -> tuple[Callable[[int, int], None], int]:
    """(log steps first..first+n, scalars per step)."""
    import torch

    log_metric, log_metrics = tracker.log_metric, tracker.log_metrics
    loss = torch.tensor(0.5)

    def step(first: int, n: int) -> None:
        for i in range(first, first + n):
            log_metric("train/loss", loss, i)
            log_metrics({k: 0.5 for k in KEYS9}, i)

    def one(first: int, n: int) -> None:
        for i in range(first, first + n):
            log_metric("loss", 0.5, i)

    def ten(first: int, n: int) -> None:
        for i in range(first, first + n):
            log_metrics({k: 0.5 for k in KEYS10}, i)

    return {"step": (step, 10), "1-key": (one, 1), "10-key": (ten, 10)}[pattern]


def _case(name: str, tracker: Tracker, pattern: str, steps: int, counter: list[int],
          out: dict[str, dict[str, list[float]]]) -> Callable[[], float]:
    log, per_step = _logger(tracker, pattern)

    def measure() -> float:
        events = steps * (2 if pattern == "step" else 1)
        target = tracker.stats().journaled + events
        others, cpu = descendants_cpu(), time.process_time()
        log(counter[0], steps)
        _wait_journaled(tracker, target)  # the training process's part ends when the journal has it all
        training = time.process_time() - cpu
        if not tracker.flush(timeout_s=600):  # the delivery processes' part ends when every sink has it
            raise RuntimeError(f"delivery_cpu: {name}: flush did not finish within 600 s")
        counter[0] += steps
        scalars = steps * per_step
        samples = out.setdefault(name, {"training": [], "delivery": []})
        samples["training"].append(training / scalars * 1e6)
        samples["delivery"].append(cpu_delta(others, descendants_cpu()) / scalars * 1e6)
        return 0.0
    return measure


def _wait_journaled(tracker: Tracker, target: int) -> None:
    """Until the writer thread has journaled `target` events (polled every 5 ms: ~0.3 % of a core)."""
    deadline = time.monotonic() + 600
    while tracker.stats().journaled < target:
        if time.monotonic() > deadline:
            raise RuntimeError("delivery_cpu: the writer did not journal the sample within 600 s")
        time.sleep(0.005)


def _floor_case(floor: Any, steps: int, counter: list[int], out: dict[str, dict[str, list[float]]]) -> Callable[[], float]:
    """The tiny loop's floor, the same step pattern: two `deque.append`s a step, one drain thread
    that writes what is there with one `orjson.dumps` and one `os.write` every 50 ms."""
    import torch

    loss = torch.tensor(0.5)

    def step(i: int) -> tuple[Any, dict[str, float]]:
        return loss, {k: 0.5 for k in KEYS9}

    def measure() -> float:
        cpu = time.process_time()
        floor.loop(step, counter[0], steps)
        while not floor.caught_up():
            time.sleep(0.005)
        counter[0] += steps
        out.setdefault(FLOOR, {"training": [], "delivery": []})["training"].append(
            (time.process_time() - cpu) / (steps * 10) * 1e6)
        return 0.0
    return measure


def run(quick: bool = False) -> dict[str, Any]:
    repeats = 3 if quick else 7
    counts = QUICK_STEPS if quick else STEPS
    base = Path(tempfile.mkdtemp(prefix="bench-delivery-cpu-"))
    trackers = {name: Tracker(sinks, base_dir=base / "runs", end_timeout_s=600) for name, sinks in _sink_sets(base).items()}
    out: dict[str, dict[str, list[float]]] = {}
    floor = _Floor(FLOOR, base, mlflow=False)
    cases: dict[str, Callable[[], float]] = {FLOOR: _floor_case(floor, counts["local"], [0], out)}
    try:
        for name, tracker in trackers.items():
            tracker.start_run("delivery_cpu")
            tracker.log_metric("warm_up", 0.0)
            tracker.flush(timeout_s=120)  # every sink open (the MLflow helper started) before any sample
            counter = [0]  # one step counter per run: steps keep increasing across its samples
            steps = counts["mlflow" if "mlflow" in name else "local"]
            for pattern in PATTERNS:
                cases[f"{name}/{pattern}"] = _case(f"{name}/{pattern}", tracker, pattern, steps, counter, out)
        interleave(cases, repeats)
    finally:
        floor.close()
        for tracker in trackers.values():
            tracker.close(timeout_s=600)
        shutil.rmtree(base, ignore_errors=True)
    rows: dict[str, dict[str, Any]] = {}
    for name in trackers:
        row: dict[str, Any] = {}
        for pattern in PATTERNS:
            samples = out[f"{name}/{pattern}"]
            row[f"training_{pattern}"] = median(samples["training"])
            row[f"delivery_{pattern}"] = median(samples["delivery"])
            row[f"x_journal_{pattern}"] = row[f"training_{pattern}"] / median(out[f"{REFERENCE}/{pattern}"]["training"])
        rows[name] = row
    floor_us = median(out[FLOOR]["training"])
    rows[FLOOR] = {"training_step": floor_us, "x_journal_step": floor_us / rows[REFERENCE]["training_step"]}
    return {"repeats": repeats, "steps": dict(counts), "rows": rows, "samples": out}


def render(result: dict[str, Any]) -> str:
    lines = [(f"CPU per logged scalar, µs: the training process (all its threads) | the delivery processes (agent + "
              f"MLflow helper); median of {result['repeats']} interleaved samples of {result['steps']['local']:,} steps "
              f"({result['steps']['mlflow']:,} with MLflow), each logged as fast as the caller can, then flushed"),
             f"  {'sinks':<26}" + "".join(f"{p + ': training':>20}{'× journal':>10}{'delivery':>10}" for p in PATTERNS)]
    for name, row in result["rows"].items():
        lines.append(f"  {name:<26}" + "".join(
            f"{row[f'training_{p}']:>20.2f}{row[f'x_journal_{p}']:>10.2f}{row.get(f'delivery_{p}', float('nan')):>10.2f}"
            if f"training_{p}" in row else f"{'':>40}" for p in PATTERNS))
    lines.append("  step: the tiny loop's 10 scalars a step (log_metric of a 0-d tensor + log_metrics of 9 floats); "
                 "× journal: training-process CPU over the journal alone (no sinks, no agent); floor: two "
                 "deque.append a step and a thread that orjson-writes them every 50 ms (benchmarks.tiny_loop)")
    return "\n".join(lines)
