"""What logging costs a training loop: a small CPU MLP step (~0.5 ms) that logs 10 metrics every
step, run with no logging, async and sync, with JSON + TensorBoard and with MLflow (sqlite) added.

Runs on the benchmark's main thread. The cases are interleaved round by round and each is reported
as the ratio of its median step time to the no-logging loop's. The loop hands the tracker 0-d
tensors, as the Trainer does; the no-logging loop computes the same tensors and drops them. The
backlog's drain time (what `end_run` waits for after the loop) is reported separately.
"""
from __future__ import annotations

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


def _time_loop(step: Callable[[], dict], steps: int, tracker: Tracker | None) -> tuple[float, float]:
    """(seconds per step, seconds end_run took to drain the backlog)."""
    log = tracker.log_metrics if tracker is not None else None
    if tracker is not None:
        tracker.start_run("bench")
    start = time.perf_counter()
    for i in range(steps):
        metrics = step()
        if log is not None:
            log(metrics, i)
    per_step = (time.perf_counter() - start) / steps
    drain = 0.0
    if tracker is not None:
        t0 = time.perf_counter()
        tracker.end_run(timeout_s=600)
        drain = time.perf_counter() - t0
    return per_step, drain


def run(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(1)  # the loop on one core, the other free for the worker (see README)
    steps = 300 if quick else 3000
    rounds = 2 if quick else 7
    base = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    step = make_step()
    for _ in range(200):
        step()  # warm-up
    cases: list[tuple[str, str | None, str | None]] = [("none", None, None)]
    for config in CONFIGS:
        for mode in ("async", "sync"):
            cases.append((f"{mode} {config}", config, mode))
    samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    drains: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for round_ in range(rounds):
        order = cases[round_ % len(cases):] + cases[:round_ % len(cases)]
        for name, config, mode in order:
            tracker = _tracker(config, mode, base) if config else None
            # sync mode with MLflow costs ~10 ms a step: fewer steps keep the run short, same median
            n = steps if not (mode == "sync" and "mlflow" in (config or "")) else max(steps // 10, 50)
            per_step, drain = _time_loop(step, n, tracker)
            samples[name].append(per_step)
            drains[name].append(drain)
    baseline = median(samples["none"])
    rows = {name: {"step_ms": median(v) * 1000, "x_none": median(v) / baseline,
                   "drain_s": median(drains[name])} for name, v in samples.items()}
    return {
        "steps": steps, "rounds": rounds, "torch_threads": 1, "rows": rows,
        "targets": {
            "async json+tb <= 1.03x no logging": rows["async json+tb"]["x_none"] <= 1.03,
            "async json+tb+mlflow <= 1.05x no logging": rows["async json+tb+mlflow"]["x_none"] <= 1.05,
        },
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"training loop, 10 metrics logged every step ({result['steps']} steps x {result['rounds']} interleaved rounds, "
             f"torch threads: {result['torch_threads']})",
             f"  {'case':<24}{'ms/step':>9}{'× none':>9}{'drain s':>9}"]
    for name, row in result["rows"].items():
        lines.append(f"  {name:<24}{row['step_ms']:>9.3f}{row['x_none']:>9.3f}{row['drain_s']:>9.2f}")
    for target, ok in result["targets"].items():
        lines.append(f"  target {target}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)
