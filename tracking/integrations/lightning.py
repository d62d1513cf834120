"""`TrackingLogger`: our trackers as a Lightning logger (`Trainer(logger=TrackingLogger(...))`).

Runs on the thread that runs Lightning's training loop, and only on global rank 0 (other ranks get
Lightning's dummy experiment). Built on `lightning.pytorch`, or on `pytorch_lightning` where only
that is installed.

What Lightning's own loggers pay per call, this one doesn't: `log_metrics` is our queue append (the
values Lightning hands over are already numbers), and `save()`, which Lightning calls after every
`log_metrics`, costs nothing; durability is the journal's (fsynced every second, and at the end).

`save_dir/name/version` is the run's directory, as with Lightning's `TensorBoardLogger`: with no
`name`, runs go straight under `save_dir` (`python -m tracking runs save_dir` lists them), and
`ModelCheckpoint` without a `dirpath` writes into the run's `checkpoints/`.
"""
from __future__ import annotations

import os
import sys
from argparse import Namespace
from pathlib import Path
from typing import Any, Mapping

try:
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only
except ImportError:  # the standalone package
    try:
        from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
        from pytorch_lightning.utilities import rank_zero_only
    except ImportError:
        raise ImportError(
            "tracking.integrations.lightning needs Lightning: pip install 'batteryml-tracking[lightning]' "
            "(with torch==2.13.0 as a constraint)"
        ) from None

from ..tracker import Tracker
from .handle import TrackerHandle
from .params import plain_params

__all__ = ["TrackingLogger"]

#: Lightning's finalize() statuses -> ours (a KeyboardInterrupt being handled makes "failed" KILLED)
_STATUSES = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}


class TrackingLogger(Logger):
    """A Lightning logger that records through one of our trackers.

    `tracker=` takes any of our trackers (its `base_dir` is then `save_dir`, and the logger ends its
    runs but leaves it open: closing it is yours). Otherwise the logger builds the `preset`
    ("local", "mlflow" or "dual") with `preset_kwargs`, owns it, and closes it in `finalize`: no
    thread of ours outlives the fit. `version` names the run (our run id then adds a timestamp);
    the run starts at the first use of `experiment` (or `version`, `log_dir`).

    A stage after `finalize` (`trainer.test()` after `fit()`) records a run of its own.
    """

    def __init__(self, save_dir: str | os.PathLike = "artifacts/runs", name: str | None = None,
                 version: str | None = None, tracker: Tracker | None = None, preset: str = "local",
                 **preset_kwargs: Any) -> None:
        super().__init__()
        if name is not None and (not isinstance(name, str) or not name or "/" in name or name in (".", "..")):
            raise ValueError(f"name must be a folder name (no '/'), got {name!r}")
        if version is not None and not isinstance(version, (str, int)):
            raise TypeError(f"version must be a str (the run's name), got {type(version).__name__}")
        self._name = "" if name is None or tracker is not None else name
        self._save_dir = os.fspath(tracker.base_dir if tracker is not None else save_dir)
        self._run_name = None if version is None else str(version)
        self._handle = TrackerHandle(tracker, preset, os.path.join(self._save_dir, self._name), preset_kwargs)
        self._logged_checkpoints: dict[str, tuple[int, int]] = {}

    # -- what Lightning reads ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The folder under `save_dir` that holds this logger's runs ("" for `save_dir` itself)."""
        return self._name

    @property
    def version(self) -> str | None:
        """Our run id: the run going, or the last one (the first use starts a run); None on ranks
        other than 0."""
        if rank_zero_only.rank != 0:
            return None
        if self._handle.run_id is None:
            _ = self.experiment
        return self._handle.run_id

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self._save_dir, self._name)

    @property
    def log_dir(self) -> str:
        """The run's directory: `save_dir/name/version`."""
        return os.path.join(self.root_dir, self.version or "")

    @property
    @rank_zero_experiment
    def experiment(self) -> Tracker:
        """The tracker, with a run going (started the first time, and again after a `finalize`)."""
        return self._handle.started(self._run_name)

    # -- what Lightning calls ----------------------------------------------------------------------

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.experiment.log_metrics(metrics, step=step)

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self.experiment.log_params(plain_params(params))

    def save(self) -> None:
        """Nothing: Lightning calls this after every `log_metrics`; the journal is already durable."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End the run: "success" -> FINISHED, "failed" -> FAILED (KILLED on a Ctrl-C). A logger
        that built its tracker closes it, so no thread of ours is left running."""
        ours = _STATUSES.get(status, "FAILED")
        if ours == "FAILED" and isinstance(sys.exc_info()[1], KeyboardInterrupt):
            ours = "KILLED"
        self._handle.end(ours)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Log the best checkpoint (or the latest, without a monitor) as an artifact, each file once
        per change: under `checkpoints/` in the run's artifacts (and in MLflow)."""
        path = getattr(checkpoint_callback, "best_model_path", "") or getattr(checkpoint_callback, "last_model_path", "")
        if not path or not os.path.isfile(path):
            return
        stat = os.stat(path)
        if self._logged_checkpoints.get(path) == (stat.st_mtime_ns, stat.st_size):
            return
        self._logged_checkpoints[path] = (stat.st_mtime_ns, stat.st_size)
        self.experiment.log_artifact(path, artifact_name=f"checkpoints/{Path(path).name}")
