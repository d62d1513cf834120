"""The events a run's journal holds and every sink receives: their kinds and typed forms.

Built on the caller's thread (the kinds), read back by the journal reader (in the delivery agent,
a replay, sync mode) into the typed NamedTuples sinks get; no code here runs on its own.

A journal holds these kinds; the caller's side builds plain tuples of them (`tracking.recorder.
capture`), the writer thread prepares them (`tracking.recorder.batch`), and the reader gives back
the NamedTuples below, so `event[0]` is the kind everywhere. Sinks compare kinds with `==` (the
strings come back from JSON on a replay: the same text, not the same object).

Before the journal holds a metric event its step is resolved (never None) and every value is a
float; a FIGURE event holds its file's path instead of the PNG's bytes (a figure logged twice under
one name gets two files). The journal keeps metrics flat, as SCALARS; sinks get them as `Metrics`.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Union

__all__ = [
    "SCALARS", "METRICS", "PARAMS", "TAG", "ARTIFACT", "FIGURE", "EXPERIMENT", "MODEL", "KINDS",
    "PNG_SIGNATURE", "Metrics", "Params", "Tag", "Artifact", "Figure", "Experiment", "Model", "SinkEvent",
    "EVENT_TYPES", "sink_event", "is_finite_all",
]

SCALARS = "scalars"
METRICS = "metrics"
PARAMS = "params"
TAG = "tag"
ARTIFACT = "artifact"
FIGURE = "figure"
EXPERIMENT = "experiment"
MODEL = "model"
#: the kinds a journal holds
KINDS = (SCALARS, METRICS, PARAMS, TAG, ARTIFACT, FIGURE, EXPERIMENT, MODEL)
#: the first 8 bytes of every PNG file: what a FIGURE's image must start with
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

class Metrics(NamedTuple):
    """Metric values at one step, as sinks receive them: the step resolved, every value a float."""

    kind: str  #: METRICS
    values: dict[str, float]
    step: int
    timestamp: float


class Params(NamedTuple):
    """Hyperparameters from `log_params` (a structural copy; nested dicts and lists kept)."""

    kind: str  #: PARAMS
    params: dict[str, Any]
    timestamp: float


class Tag(NamedTuple):
    """A tag from `set_tag`, its value as text."""

    kind: str  #: TAG
    key: str
    value: str
    timestamp: float


class Artifact(NamedTuple):
    """A file snapshot from `log_artifact`: `path` is inside the run directory and never changes."""

    kind: str  #: ARTIFACT
    name: str
    path: str
    timestamp: float


class Figure(NamedTuple):
    """A PNG from `log_figure`: `path` is inside the run's `figures/` and never changes."""

    kind: str  #: FIGURE
    name: str
    path: str
    timestamp: float


class Experiment(NamedTuple):
    """An experiment to create (`create_experiment` during a run); MLflow maps it."""

    kind: str  #: EXPERIMENT
    name: str
    timestamp: float


class Model(NamedTuple):
    """A model from `log_model`, saved when it was logged: `path` is its folder inside the run's
    `artifacts/` (an MLflow Model where mlflow is installed; `tracking.recorder.models`), never changed."""

    kind: str  #: MODEL
    artifact_path: str
    path: str
    registered_model_name: str | None
    timestamp: float


#: what a sink's `write` receives: one of these (tuples, so `event[0]` is the kind, as before).
#: A sink ignores the kinds it has no use for; later versions may add kinds.
SinkEvent = Union[Metrics, Params, Tag, Artifact, Figure, Experiment, Model]
EVENT_TYPES: dict[str, type] = {
    METRICS: Metrics, PARAMS: Params, TAG: Tag, ARTIFACT: Artifact, FIGURE: Figure, EXPERIMENT: Experiment,
    MODEL: Model,
}
_new = tuple.__new__


def sink_event(event: tuple) -> SinkEvent:
    """The typed form of a prepared event (sync mode; the journal reader builds its own)."""
    if event[0] is SCALARS:
        _, keys, values, step, ts = event
        return _new(Metrics, (METRICS, dict(zip(keys, values)), step, ts))
    return _new(EVENT_TYPES[event[0]], event)


def is_finite_all(values: dict[str, float] | tuple[float, ...]) -> bool:
    """True if every value (of a dict, or a tuple) is finite (a fast sum first: the common case)."""
    numbers = values.values() if type(values) is dict else values
    try:
        if math.isfinite(sum(numbers)):
            return True
    except TypeError:
        return False
    return all(math.isfinite(v) for v in numbers)
