"""What logging costs a training loop: a small CPU MLP step (~0.5 ms) that logs 10 metrics every
step, run with no logging, async and sync, with JSON + TensorBoard and with MLflow (sqlite) added.

Runs on the benchmark's main thread. The cases alternate in short chunks, round after round, and each
is reported as the median over rounds of its chunk's step time divided by the no-logging chunk's in
the same round. The loop hands the tracker 0-d
tensors, as the Trainer does; the no-logging loop computes the same tensors and drops them. The
backlog's drain time (what `end_run` waits for after the loop) is reported separately.
"""
from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from tracking import Tracker

from .harness import median

__all__ = ["run", "make_step", "CONFIGS"]

CONFIGS: dict[str, list[str]] = {
    "json+tb": ["json", "tensorboard"],
    "json+tb+mlflow": ["json", "tensorboard", "mlflow"],
}


def make_step(seed: int = 0) -> Callable[[], dict[str, torch.Tensor]]:
    """One training step of a 2-layer MLP on a batch of 64; returns 10 0-d tensors to log."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 1))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(64, 32), torch.randn(64, 1)

    def step() -> dict[str, torch.Tensor]:
        pred = model(x)
        loss = torch.nn.functional.mse_loss(pred, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        d = (pred - y).detach()
        return {"train/loss": loss.detach(), "train/grad_norm": grad_norm, "train/mae": d.abs().mean(),
                "train/rmse": d.pow(2).mean(), "train/pred_mean": pred.detach().mean(),
                "train/pred_std": pred.detach().std(), "train/max_err": d.abs().max(),
                "train/min_err": d.abs().min(), "train/bias": d.mean(), "train/lr": torch.tensor(1e-3)}

    return step


def _mlflow_sink(base: Path) -> Any:
    from tracking.sinks.mlflow_sink import MLflowSink

    return MLflowSink(tracking_uri=f"sqlite:///{base}/mlflow.db")


def _tracker(config: str, mode: str, base: Path) -> Tracker:
    sinks: list[Any] = [s for s in CONFIGS[config] if s != "mlflow"]
    if "mlflow" in CONFIGS[config]:
        sinks.append(_mlflow_sink(base))
    return Tracker(sinks, mode=mode, base_dir=base / "runs", end_timeout_s=600)


def _chunk(step: Callable[[], dict], steps: int, tracker: Tracker | None, first_step: int) -> float:
    """Seconds per step over `steps` steps while the worker (and MLflow's helper) run beside them.

    The flush after the timed loop keeps a chunk's backlog from spilling into the next case's
    chunk; the time it takes is the drain time, reported on its own.
    """
    log = tracker.log_metrics if tracker is not None else None
    start = time.perf_counter()
    for i in range(first_step, first_step + steps):
        metrics = step()
        if log is not None:
            log(metrics, i)
    per_step = (time.perf_counter() - start) / steps
    if tracker is not None:
        tracker.flush(timeout_s=600)
    return per_step


def _drain_after_loop(step: Callable[[], dict], steps: int, tracker: Tracker, first_step: int) -> float:
    """Seconds `end_run` waits after a chunk logged without flushing: the backlog's drain time."""
    for i in range(first_step, first_step + steps):
        tracker.log_metrics(step(), i)
    start = time.perf_counter()
    tracker.end_run(timeout_s=600)
    return time.perf_counter() - start


def run(quick: bool = False) -> dict[str, Any]:
    """Cases alternate in short chunks over many rounds, so that the
    machine's drift and noise hit every case alike; each tracker lives for the whole benchmark, as
    a run does for a whole training job."""
    torch.set_num_threads(1)  # the loop on one core, the other free for the worker (see README)
    chunk = 100 if quick else 400
    rounds = 3 if quick else 25
    base = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    step = make_step()
    cases: dict[str, Tracker | None] = {"none": None}
    for config in CONFIGS:
        for mode in ("async", "sync"):
            cases[f"{mode} {config}"] = _tracker(config, mode, base)
    for name, tracker in cases.items():
        if tracker is not None:
            tracker.start_run(name.replace(" ", "_").replace("+", "_"))
            tracker.flush(timeout_s=120)  # sinks open (the MLflow helper starts) before timing
    for _ in range(200):
        step()  # warm-up
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    next_step = dict.fromkeys(names, 0)
    for round_ in range(rounds):
        gc.collect()
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            # sync mode with MLflow costs ~13 ms a step: fewer steps keep the run short, same median
            n = chunk if name != "sync json+tb+mlflow" else max(chunk // 10, 20)
            samples[name].append(_chunk(step, n, cases[name], next_step[name]))
            next_step[name] += n
    drains = {name: _drain_after_loop(step, chunk * 5, t, next_step[name]) if t is not None else 0.0
              for name, t in cases.items()}
    ratios = {name: [s / n for s, n in zip(v, samples["none"])] for name, v in samples.items()}
    rows = {name: {"step_ms": median(v) * 1000, "x_none": median(ratios[name]), "drain_s": drains[name]}
            for name, v in samples.items()}
    return {
        "chunk_steps": chunk, "rounds": rounds, "torch_threads": 1, "rows": rows,
        "targets": {
            "async json+tb <= 1.03x no logging": rows["async json+tb"]["x_none"] <= 1.03,
            "async json+tb+mlflow <= 1.05x no logging": rows["async json+tb+mlflow"]["x_none"] <= 1.05,
        },
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"training loop, 10 metrics logged every step ({result['rounds']} rounds of {result['chunk_steps']}-step chunks, "
             f"cases interleaved; torch threads: {result['torch_threads']})",
             f"  {'case':<24}{'ms/step':>9}{'× none':>9}{'drain s':>9}"]
    for name, row in result["rows"].items():
        lines.append(f"  {name:<24}{row['step_ms']:>9.3f}{row['x_none']:>9.3f}{row['drain_s']:>9.2f}")
    for target, ok in result["targets"].items():
        lines.append(f"  target {target}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)
