"""batteryml-tracking: an experiment tracker whose log calls cost about a microsecond.

Imported on the caller's thread. `Tracker` is the general form; `LocalTracker`, `MLflowTracker` and
`DualTracker` are the presets named by BatteryML's tracking docs.
"""
from __future__ import annotations

import os as _os
import sys as _sys

if _os.name != "posix":  # fcntl locks, fork hooks, pidfds: say so, not "No module named 'fcntl'"
    raise ImportError(f"batteryml-tracking runs on POSIX systems (Linux), not on {_sys.platform}")

from .core.errors import *  # noqa: F401,F403 - the exceptions are part of the public API
from .core.errors import __all__ as _errors_all
from .delivery.engine import RetryPolicy
from .sinks import PermanentSinkError, Resume, RunContext, Sink
from .recorder.models import ModelInfo
from .recorder.stats import RunReport, TrackerStats
from .tracker import RunState, Tracker
from .local import LocalTracker
from .mlflow_tracker import MLflowTracker
from .dual_tracker import DualTracker
from .presets import TRACKERS, create_tracker

__all__ = [
    "Tracker",
    "LocalTracker",
    "MLflowTracker",
    "DualTracker",
    "TRACKERS",
    "create_tracker",
    "RunState",
    "RetryPolicy",
    "RunReport",
    "TrackerStats",
    "ModelInfo",
    "Sink",
    "RunContext",
    "Resume",
    "PermanentSinkError",
    *_errors_all,
]
__version__ = "0.1.0"
