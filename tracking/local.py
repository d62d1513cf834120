"""`LocalTracker`: JSON files plus TensorBoard under `{base_dir}/{run_id}/`. A thin preset.

Built and used on the caller's thread, like every `Tracker`.
"""
from __future__ import annotations

import os
from typing import Any

from .tracker import Tracker

__all__ = ["LocalTracker"]


class LocalTracker(Tracker):
    """JSON + TensorBoard, for local development (BatteryML's `LocalTracker`)."""

    def __init__(
        self,
        base_dir: str | os.PathLike = "artifacts/runs",
        use_tensorboard: bool = True,
        mode: str = "async",
        **kwargs: Any,
    ) -> None:
        sinks = ["json", "tensorboard"] if use_tensorboard else ["json"]
        super().__init__(sinks=sinks, mode=mode, base_dir=base_dir, **kwargs)
