"""The sink contract: what every sink, built-in or third-party, receives and promises.

Called from the worker (async mode: a thread of the worker's pool, one call at a time per sink) or
from the caller's thread (sync mode). Never from two threads at once for one sink instance.
A sink whose ``write`` and ``flush`` only touch local files and return within milliseconds may set
the class attribute ``blocking = False``: the worker then makes those two calls on its own thread
instead of a pool thread, which saves two thread switches a batch (each a GIL hand-off the training
thread also pays for); ``open`` and ``close`` still run in the pool. A sink that talks to a network,
or may wait, leaves it out (the default is ``blocking = True``).

A sink is any object with these four methods (`Sink` below). For each run it sees, in this order:

1. ``open(run)`` once, before any event. ``run`` is a `RunContext`. It may return a mapping of facts
   to record in the run's ``meta.json`` under the sink's name (the MLflow sink returns its run id).
2. ``write(events)`` any number of times, with the run's events in the order they were logged, each
   event exactly once when calls succeed. Events are tuples (layouts in `tracking.events`): metric
   steps are resolved ints and metric values floats (NaN and ±inf included); artifact and figure
   events carry the path of a file inside the run directory that nobody will modify.
3. ``flush()`` whenever the user flushes: on return, everything written so far must be durable or
   visible to readers (files flushed, requests answered).
4. ``close(status)`` once, at the end of the run, with "FINISHED", "FAILED" or "KILLED". After it the
   sink may be opened again for the tracker's next run.

Errors: a sink may raise from any method. `PermanentSinkError` from ``write`` says "this batch can
never be accepted" (the worker counts it and moves on); from ``open``, ``flush`` or ``close`` it
says "give up": the sink gets nothing more this run and its events wait in the journal for replay.
Any other exception is transient: the worker
retries the same call with exponential back-off, never calls the sink concurrently, and meanwhile
keeps the sink's backlog in the journal, not in memory. A failing sink never blocks the others, and
its undelivered events can be replayed with ``python -m tracking replay``.

Sinks are found by name through the ``tracking.sinks`` entry-point group; a sink class is built with
no arguments when named by a string, so give every constructor argument a default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from ..errors import PermanentSinkError  # defined with the other exceptions; sinks import it from here
from ..redact import DEFAULT_SECRET_KEY_PATTERNS

__all__ = ["Sink", "RunContext", "PermanentSinkError"]


@dataclass(frozen=True)
class RunContext:
    """What a sink knows about the run it is opened for."""

    run_id: str
    run_name: str
    run_dir: Path
    experiment: str
    config: Mapping[str, Any]
    start_time: float
    mode: str
    #: experiments the user asked to create before the run started (create_experiment)
    experiments: tuple[str, ...] = ()
    #: facts recorded by an earlier delivery of this run (replay): e.g. the MLflow run id to resume
    resume: Mapping[str, Any] = field(default_factory=dict)
    #: config/param/tag keys whose values a sink must mask before they leave the machine
    #: (`tracking.redact.redact_config`); local files keep them
    secret_key_patterns: tuple[str, ...] = DEFAULT_SECRET_KEY_PATTERNS


@runtime_checkable
class Sink(Protocol):
    """The four calls a sink answers; see the module docstring for the guarantees on each."""

    #: the name the sink reports under in stats(), meta.json and warnings
    name: str
    # Optional, not part of the protocol check: ``blocking = False`` (see the module docstring).

    def open(self, run: RunContext) -> Mapping[str, Any] | None: ...

    def write(self, events: Sequence[tuple]) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: str) -> None: ...
