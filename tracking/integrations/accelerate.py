"""`AccelerateTracker`: our trackers as an Accelerate tracker.

    accelerator = Accelerator(log_with=[AccelerateTracker("run", logging_dir="artifacts/runs")])
    accelerator.init_trackers("project", config={...})
    accelerator.log({"loss": loss}, step=step)   # 0-d tensors as they are: no host sync here
    accelerator.end_training()

Runs on the thread of the training script, on the main process only (Accelerate's
`on_main_process`). `log` takes numbers and 0-d tensors (a CUDA tensor is read on our writer
thread, never here), text (kept as a tag) and dicts of numbers (logged as `key/sub`, as
Accelerate's TensorBoard tracker's `add_scalars` names them).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

try:
    from accelerate.tracking import GeneralTracker, on_main_process
except ImportError:
    raise ImportError(
        "tracking.integrations.accelerate needs Accelerate: pip install 'batteryml-tracking[accelerate]' "
        "(with torch==2.13.0 as a constraint)"
    ) from None

from ..tracker import Tracker
from .handle import TrackerHandle
from .params import plain_params

__all__ = ["AccelerateTracker"]


class AccelerateTracker(GeneralTracker):
    """An Accelerate tracker recording through one of our trackers (given, or a preset built under
    `logging_dir` and closed by `finish`)."""

    name = "batteryml-tracking"
    requires_logging_directory = False  # it takes its own logging_dir
    main_process_only = True

    def __init__(self, run_name: str | None = None, logging_dir: str | os.PathLike = "artifacts/runs",
                 tracker: Tracker | None = None, preset: str = "local", **preset_kwargs: Any) -> None:
        super().__init__()
        self.run_name = run_name
        self._handle = TrackerHandle(tracker, preset, logging_dir, preset_kwargs)
        self.logging_dir = self._handle.base_dir

    @on_main_process
    def start(self) -> None:
        self._handle.started(self.run_name)

    @property
    def tracker(self) -> Tracker | None:
        """Our tracker (Accelerate's `get_tracker(name, unwrap=True)` returns it)."""
        return self._handle.tracker

    @on_main_process
    def store_init_configuration(self, values: Mapping[str, Any]) -> None:
        self._handle.started(self.run_name).log_params(plain_params(values))

    @on_main_process
    def log(self, values: Mapping[str, Any], step: int | None = None, **kwargs: Any) -> None:
        tracker = self._handle.started(self.run_name)
        metrics: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue  # Accelerate's own trackers skip it too
            if isinstance(value, bool):
                metrics[key] = int(value)
            elif isinstance(value, str):
                tracker.set_tag(key, value)
            elif isinstance(value, Mapping):
                metrics.update({f"{key}/{sub}": v for sub, v in value.items()})
            else:
                metrics[key] = value  # numbers and 0-d tensors; anything else: our InvalidMetricError
        if metrics:
            tracker.log_metrics(metrics, step=step)

    @on_main_process
    def finish(self) -> None:
        self._handle.end("FINISHED")
