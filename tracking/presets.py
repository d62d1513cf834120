"""The preset registry: "local", "mlflow" and "dual" by name (what `--tracker` on the CLI accepts).

Runs on the caller's thread.
"""
from __future__ import annotations

from typing import Any

from .dual_tracker import DualTracker
from .local import LocalTracker
from .mlflow_tracker import MLflowTracker
from .tracker import Tracker

__all__ = ["TRACKERS", "create_tracker"]

TRACKERS: dict[str, type[Tracker]] = {
    "local": LocalTracker,
    "mlflow": MLflowTracker,
    "dual": DualTracker,
}


def create_tracker(name: str, **kwargs: Any) -> Tracker:
    """Build the preset called `name` with its keyword arguments."""
    try:
        cls = TRACKERS[name]
    except KeyError:
        raise ValueError(f"unknown tracker {name!r}; choose one of: {', '.join(TRACKERS)}") from None
    return cls(**kwargs)
