"""A slow sink (100 ms added to every write) behind the training loop: async vs sync, side by side.

Runs on the benchmark's main thread. The loop is the training-loop benchmark's step logging 10
metrics; the sinks are JSON plus a sink that sleeps 100 ms per call, as a slow network store would.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from tracking import Tracker

from .harness import median
from .training_loop import make_step

__all__ = ["run"]

DELAY_S = 0.1


class SlowSink:
    """Takes 100 ms for every call that delivers events. Given as a class: built in the agent process."""

    name = "slow"

    def open(self, run: Any) -> None:
        return None

    def write(self, events: Sequence[tuple]) -> None:
        time.sleep(DELAY_S)

    def flush(self) -> None:
        pass

    def close(self, status: str) -> None:
        pass


def _loop(step, steps: int, tracker: Tracker | None) -> float:
    if tracker is not None:
        tracker.start_run("slow_sink")
    start = time.perf_counter()
    for i in range(steps):
        metrics = step()
        if tracker is not None:
            tracker.log_metrics(metrics, i)
    per_step = (time.perf_counter() - start) / steps
    if tracker is not None:
        tracker.close(timeout_s=600)
    return per_step


def run(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(1)
    steps = 50 if quick else 400
    rounds = 1 if quick else 5
    base = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    step = make_step()
    for _ in range(100):
        step()
    samples: dict[str, list[float]] = {"none": [], "async": [], "sync": []}
    for _ in range(rounds):
        samples["none"].append(_loop(step, steps, None))
        for mode in ("async", "sync"):
            samples[mode].append(_loop(step, steps, Tracker(["json", SlowSink], mode=mode, base_dir=base)))
    base_ms = median(samples["none"])
    rows = {name: {"step_ms": median(v) * 1000, "x_none": median(v) / base_ms} for name, v in samples.items()}
    return {"steps": steps, "rounds": rounds, "delay_s": DELAY_S, "rows": rows,
            "targets": {"async loop does not notice the slow sink (<= 1.10x)": rows["async"]["x_none"] <= 1.10}}


def render(result: dict[str, Any]) -> str:
    lines = [f"slow sink ({result['delay_s'] * 1000:.0f} ms per write) behind the loop "
             f"({result['steps']} steps, median of {result['rounds']})",
             f"  {'case':<10}{'ms/step':>10}{'× none':>10}"]
    for name, row in result["rows"].items():
        lines.append(f"  {name:<10}{row['step_ms']:>10.3f}{row['x_none']:>10.2f}")
    sync_vs_async = result["rows"]["sync"]["step_ms"] / result["rows"]["async"]["step_ms"]
    lines.append(f"  sync / async: {sync_vs_async:.0f}x")
    for target, ok in result["targets"].items():
        lines.append(f"  target {target}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)
