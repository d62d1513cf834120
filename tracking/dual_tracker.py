"""`DualTracker`: JSON + TensorBoard + MLflow, the recommended default. A thin preset.

Built and used on the caller's thread, like every `Tracker`.
"""
from __future__ import annotations

import os
from typing import Any

from .tracker import Tracker

__all__ = ["DualTracker"]


class DualTracker(Tracker):
    """Local files and MLflow at once (BatteryML's `DualTracker`); `start_run` returns the local run id.

    The effective MLflow URI is `self.mlflow_tracking_uri` (see `tracking.sinks.mlflow.uri`).
    """

    def __init__(
        self,
        local_base_dir: str | os.PathLike = "artifacts/runs",
        use_tensorboard: bool = True,
        mlflow_tracking_uri: str | None = None,
        mlflow_experiment_name: str = "Default",
        mode: str = "async",
        **kwargs: Any,
    ) -> None:
        from .sinks.mlflow import MLflowSink

        mlflow = MLflowSink(tracking_uri=mlflow_tracking_uri)
        sinks: list[Any] = ["json", "tensorboard", mlflow] if use_tensorboard else ["json", mlflow]
        super().__init__(
            sinks=sinks, mode=mode, base_dir=local_base_dir, experiment_name=mlflow_experiment_name, **kwargs
        )
        self.mlflow_tracking_uri: str = mlflow.tracking_uri
