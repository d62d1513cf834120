"""What logging costs a training loop: a small CPU MLP step that logs 10 metrics every step, with no
logging, ours async, ours sync, and "by hand" (tensorboardX and MLflow's async logging called from
the loop), with JSON + TensorBoard and with MLflow (sqlite) added.

Runs on the benchmark's main thread. How a case is measured, and why:

- Pairs. This machine's speed swings by up to 40 % within seconds (other tenants), so each case's
  chunk runs right after a no-logging chunk, and the figure is the median over rounds of the ratio
  within each pair. The cases' order rotates from round to round.
- Everything a chunk logged is paid inside that chunk. After its logging steps, a chunk of ours
  async keeps running *plain* steps (no logging) until the delivery agent has delivered all it
  logged to every sink, and all those steps count: the writer's and the agent's work that runs
  beside training is charged to the chunk, and none of it leaks into the next case. The by-hand peers run the same number of plain
  steps, then flush untimed (their writers' own threads have no "delivered" signal to wait for).
- CPU. Beside wall time each chunk records the training process's CPU time (all its threads; the
  delivery agent and the MLflow helper are other processes, excluded), so `cpu× none` shows what
  logging costs the training process in CPU even when a second core hides it.

The loop hands the tracker 0-d tensors, as the Trainer does; the no-logging loop computes the same
tensors and drops them. The by-hand loop calls `.item()` itself, as users do. The backlog's drain
time (what `end_run` waits for after a loop that never flushed) is reported separately.
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
#: plain steps a chunk may run after its logging steps while the agent catches up (a safety cap)
_MAX_TRAILING_STEPS = 2000
#: cases at ~10 ms a step: a tenth of the steps a chunk, the same median
_SLOW = ("sync json+tb+mlflow", "by hand json+tb+mlflow")


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


# -- the cases: each knows how to log a step, whether it has caught up, and how to finish -------------

class _Ours:
    """Our tracker with `config`'s sinks in `mode`; caught up once every sink has every event."""

    def __init__(self, config: str, mode: str, base: Path) -> None:
        sinks: list[Any] = [s for s in CONFIGS[config] if s != "mlflow"]
        if "mlflow" in CONFIGS[config]:
            from tracking.sinks.mlflow import MLflowSink

            sinks.append(MLflowSink(tracking_uri=f"sqlite:///{base}/mlflow-ours.db"))
        self.tracker = Tracker(sinks, mode=mode, base_dir=base / "runs", end_timeout_s=600)
        self.tracker.start_run(f"{mode}_{config.replace('+', '_')}")
        self.tracker.flush(timeout_s=120)  # sinks open (the MLflow helper starts) before timing
        self.log = self.tracker.log_metrics

    def caught_up(self) -> bool:
        stats = self.tracker.stats()
        return stats.queue_depth == 0 and not any(stats.undelivered.values())

    def settle(self) -> None:
        self.tracker.flush(timeout_s=600)

    def close(self) -> float:
        start = time.perf_counter()
        self.tracker.end_run(timeout_s=600)
        seconds = time.perf_counter() - start
        self.tracker.close()
        return seconds


class _ByHand:
    """What users write without us: tensorboardX's writer, plus `mlflow.log_metrics(synchronous=False)`."""

    def __init__(self, config: str, base: Path) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(base / f"by-hand-{config}"))
        self.mlflow = None
        if "mlflow" in CONFIGS[config]:
            import mlflow

            mlflow.set_tracking_uri(f"sqlite:///{base}/mlflow-by-hand.db")
            mlflow.set_experiment("by_hand")  # not whatever experiment an earlier benchmark made active
            mlflow.start_run(run_name=f"by_hand_{config}")
            self.mlflow = mlflow

    def log(self, metrics: dict, step: int) -> None:
        values = {key: value.item() for key, value in metrics.items()}
        add_scalar = self.writer.add_scalar
        for key, value in values.items():
            add_scalar(key, value, step)
        if self.mlflow is not None:
            self.mlflow.log_metrics(values, step=step, synchronous=False)

    def caught_up(self) -> bool:
        return True  # no "delivered" signal to wait for: the fixed plain steps, then settle()

    def settle(self) -> None:
        self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.flush_async_logging()

    def close(self) -> float:
        start = time.perf_counter()
        self.settle()
        self.writer.close()
        if self.mlflow is not None:
            self.mlflow.end_run()
        return time.perf_counter() - start


# -- timing ---------------------------------------------------------------------------------------------

def _timed_chunk(step: Callable[[], dict], case: Any, steps: int, first: int, plain_after: int) -> tuple[float, float, int]:
    """(wall s, CPU s, steps run) for `steps` logging steps and the plain steps that follow them."""
    log = case.log
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(first, first + steps):
        log(step(), i)
    ran = steps
    while ran < steps + _MAX_TRAILING_STEPS and (ran < steps + plain_after or not case.caught_up()):
        step()
        ran += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    case.settle()
    return wall, cpu, ran


def _plain_chunk(step: Callable[[], dict], steps: int) -> tuple[float, float]:
    """(wall s, CPU s) per step of `steps` steps that compute the metrics and drop them."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def _cases(base: Path) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    for config in CONFIGS:
        cases[f"async {config}"] = _Ours(config, "async", base)
        cases[f"sync {config}"] = _Ours(config, "sync", base)
        cases[f"by hand {config}"] = _ByHand(config, base)
    return cases


def run(quick: bool = False) -> dict[str, Any]:
    """Rounds of (plain chunk, case chunk) pairs; every tracker lives for the whole benchmark, as a
    run does for a whole training job."""
    torch.set_num_threads(1)  # the loop on one core, the other free for the delivery agent (see README)
    chunk = 100 if quick else 400
    rounds = 3 if quick else 25
    base = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    step = make_step()
    cases = _cases(base)
    for _ in range(200):
        step()  # warm-up
    # The same number of plain steps after every async case's logging steps: at least one batch
    # interval's worth, so the writer wakes inside the chunk; ours may run more until caught up.
    plain_after = 0 if quick else 60
    names = list(cases)
    ratios: dict[str, list[float]] = {name: [] for name in names}
    cpu_ratios: dict[str, list[float]] = {name: [] for name in names}
    step_ms: dict[str, list[float]] = {name: [] for name in names}
    extra_steps: dict[str, list[int]] = {name: [] for name in names}
    none_ms: list[float] = []
    next_step = dict.fromkeys(names, 0)
    for round_ in range(rounds):
        gc.collect()
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            # sync mode and by hand with MLflow cost ~10 ms a step: fewer steps keep the run short
            n = chunk if name not in _SLOW else max(chunk // 10, 20)
            trailing = plain_after if not name.startswith("sync") else 0
            none_wall, none_cpu = _plain_chunk(step, n)
            wall, cpu, ran = _timed_chunk(step, cases[name], n, next_step[name], trailing)
            next_step[name] += n
            ratios[name].append(wall / ran / none_wall)
            cpu_ratios[name].append(cpu / ran / none_cpu)
            step_ms[name].append(wall / ran * 1000)
            extra_steps[name].append(ran - n)
            none_ms.append(none_wall * 1000)
    drains = {name: _drain_after_loop(step, chunk * (5 if name not in _SLOW else 1), cases[name], next_step[name])
              for name in names}
    rows = {"none": {"step_ms": median(none_ms), "x_none": 1.0, "cpu_x_none": 1.0, "plain_steps": 0, "drain_s": 0.0}}
    for name in names:
        rows[name] = {"step_ms": median(step_ms[name]), "x_none": median(ratios[name]),
                      "cpu_x_none": median(cpu_ratios[name]), "plain_steps": median(extra_steps[name]),
                      "drain_s": drains[name]}
    return {
        "chunk_steps": chunk, "rounds": rounds, "torch_threads": 1, "rows": rows,
        "targets": {
            "async json+tb <= 1.03x no logging": rows["async json+tb"]["x_none"] <= 1.03,
            "async json+tb+mlflow <= 1.05x no logging": rows["async json+tb+mlflow"]["x_none"] <= 1.05,
        },
    }


def _drain_after_loop(step: Callable[[], dict], steps: int, case: Any, first_step: int) -> float:
    """Seconds closing the run takes after `steps` logged steps that never waited: the backlog's drain."""
    for i in range(first_step, first_step + steps):
        case.log(step(), i)
    return case.close()


def render(result: dict[str, Any]) -> str:
    lines = [f"training loop, 10 metrics logged every step ({result['rounds']} rounds of {result['chunk_steps']}-step chunks, "
             f"each right after a no-logging chunk; torch threads: {result['torch_threads']})",
             f"  {'case':<26}{'ms/step':>9}{'× none':>9}{'cpu× none':>11}{'+plain':>8}{'drain s':>9}"]
    for name, row in result["rows"].items():
        lines.append(f"  {name:<26}{row['step_ms']:>9.3f}{row['x_none']:>9.3f}{row['cpu_x_none']:>11.3f}"
                     f"{row['plain_steps']:>8.0f}{row['drain_s']:>9.2f}")
    lines.append("  (+plain: median plain steps a chunk ran after logging until the sinks had it all; "
                 "they count in the chunk)")
    for target, ok in result["targets"].items():
        lines.append(f"  target {target}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)
