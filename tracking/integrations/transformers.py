"""`TrackingCallback`: our trackers under Hugging Face's `Trainer`.

    Trainer(model, args, callbacks=[TrackingCallback(preset="dual", ...)], report_to=[])

Runs on the thread that runs `Trainer.train()`, and records only where
`state.is_world_process_zero`. `on_train_begin` starts the run with `args.to_dict()` (and the
model's config, if it has one) as its config; `on_log` logs the numbers of `logs` at
`state.global_step` (text values become tags); `on_save` logs the checkpoint folder's files as
artifacts when `log_checkpoints=True`; `on_train_end` ends the run FINISHED. transformers has no
exception hook: a training that raises is ended FAILED by our exit handling (the excepthook and
atexit), or KILLED by SIGTERM / Ctrl-C.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError:
    raise ImportError(
        "tracking.integrations.transformers needs transformers: pip install 'batteryml-tracking[transformers]' "
        "(with torch==2.13.0 as a constraint)"
    ) from None

from ..tracker import Tracker
from .handle import TrackerHandle
from .params import plain_params

__all__ = ["TrackingCallback"]

_logger = logging.getLogger(__name__)


class TrackingCallback(TrainerCallback):
    """Records a `transformers.Trainer` run through one of our trackers (given, or a preset built
    under `save_dir` and closed at the end of training)."""

    def __init__(self, save_dir: str | os.PathLike = "artifacts/runs", run_name: str | None = None,
                 tracker: Tracker | None = None, preset: str = "local", log_checkpoints: bool = False,
                 **preset_kwargs: Any) -> None:
        self._handle = TrackerHandle(tracker, preset, save_dir, preset_kwargs)
        self._run_name = run_name
        self._log_checkpoints = bool(log_checkpoints)
        self._skipped: set[str] = set()

    @property
    def tracker(self) -> Tracker | None:
        """The tracker being recorded through (None before training on a preset, and after)."""
        return self._handle.tracker

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        config = plain_params(args.to_dict())
        model_config = getattr(model, "config", None)
        if model_config is not None and hasattr(model_config, "to_dict"):
            config["model_config"] = plain_params(model_config.to_dict())
        run_name = self._run_name or getattr(args, "run_name", None)
        self._handle.started(run_name, config=config)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        tracker = self._handle.started(self._run_name)
        metrics: dict[str, Any] = {}
        for key, value in logs.items():
            if isinstance(value, bool):
                metrics[key] = int(value)
            elif isinstance(value, (int, float)) or hasattr(value, "item"):
                metrics[key] = value
            elif isinstance(value, str):
                tracker.set_tag(key, value)
            elif key not in self._skipped:
                self._skipped.add(key)
                _logger.warning("transformers logged %r = %.80r, which is neither a number nor text; "
                                "it is not recorded", key, value)
        if metrics:
            tracker.log_metrics(metrics, step=state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._log_checkpoints or not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        tracker = self._handle.started(self._run_name)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            tracker.log_artifact(path, artifact_name=f"checkpoints/{folder.name}/{path.relative_to(folder)}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._handle.end("FINISHED")
