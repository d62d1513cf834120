"""`MLflowTracker`: MLflow only (plus the local journal every run keeps). A thin preset.

Built and used on the caller's thread, like every `Tracker`.
"""
from __future__ import annotations

import os
from typing import Any

from .tracker import Tracker

__all__ = ["MLflowTracker"]


class MLflowTracker(Tracker):
    """MLflow, for team collaboration (BatteryML's `MLflowTracker`).

    `tracking_uri`: `sqlite:///...` (default: `./artifacts/mlruns/mlflow.db`), `http://host:port`,
    or `file:./artifacts/mlruns` as the docs show it (see `tracking.sinks.mlflow.uri` for how it is
    served). The effective URI is `self.tracking_uri`. The run's journal and meta still go to `base_dir`,
    so nothing logged is lost while the server is away.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "Default",
        mode: str = "async",
        base_dir: str | os.PathLike = "artifacts/runs",
        **kwargs: Any,
    ) -> None:
        from .sinks.mlflow import MLflowSink

        sink = MLflowSink(tracking_uri=tracking_uri)
        super().__init__(sinks=[sink], mode=mode, base_dir=base_dir, experiment_name=experiment_name, **kwargs)
        self.tracking_uri: str = sink.tracking_uri
