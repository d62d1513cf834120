"""Sinks: where events go. One module per sink; the contract is in `tracking.sinks.base`, and the
events a sink receives (`Metrics`, `Params`, ... and their kinds) are importable from here.

`resolve_sink` runs on the caller's thread when a tracker is built.
"""
from __future__ import annotations

import importlib
import re
from importlib.metadata import entry_points
from typing import Any

from ..core.errors import UnknownSinkError
from ..journal.events import (
    ARTIFACT, EXPERIMENT, FIGURE, KINDS, METRICS, MODEL, PARAMS, TAG, Artifact, Experiment, Figure, Metrics, Model,
    Params, SinkEvent, Tag,
)
from .base import PermanentSinkError, Resume, RunContext, Sink

__all__ = ["Sink", "RunContext", "Resume", "PermanentSinkError", "resolve_sink", "load_sink_class", "available_sinks",
           "ENTRY_POINT_GROUP", "SinkEvent", "Metrics", "Params", "Tag", "Artifact", "Figure", "Experiment", "Model",
           "KINDS", "METRICS", "PARAMS", "TAG", "ARTIFACT", "FIGURE", "EXPERIMENT", "MODEL"]

ENTRY_POINT_GROUP = "tracking.sinks"
_SINK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")

# The built-ins, so a source checkout works before `pip install -e .` has registered entry points.
_BUILTIN = {
    "json": "tracking.sinks.json_sink:JsonSink",
    "tensorboard": "tracking.sinks.tensorboard:TensorBoardSink",
    "mlflow": "tracking.sinks.mlflow:MLflowSink",
}


def available_sinks() -> list[str]:
    """Every sink name that `resolve_sink` accepts: built-ins and installed entry points."""
    return sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_sink_class(name: str) -> Any:
    """The sink class registered under `name` (an entry point, or a built-in)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    if name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise UnknownSinkError(
        f"no sink named {name!r}; available: {', '.join(available_sinks())} "
        f"(third-party sinks register under the entry-point group {ENTRY_POINT_GROUP!r})"
    )


def resolve_sink(spec: Any) -> Sink:
    """A sink instance from a name, a sink class, or an instance."""
    if isinstance(spec, str):
        spec = load_sink_class(spec)
    if isinstance(spec, type):
        spec = spec()
    missing = [m for m in ("open", "write", "flush", "close") if not callable(getattr(spec, m, None))]
    if missing:
        raise TypeError(
            f"{type(spec).__name__} is not a sink: it lacks {', '.join(missing)} "
            "(see tracking.sinks.base.Sink)"
        )
    name = getattr(spec, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{type(spec).__name__} is not a sink: it needs a non-empty str `name` attribute")
    if not _SINK_NAME.fullmatch(name):
        raise ValueError(f"sink name {name!r} must be letters, digits, '_', '-' or '.' (it names files "
                         "under the run's delivery/ folder and the replay command's --to)")
    return spec
