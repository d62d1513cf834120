"""The sink contract: what every sink, built-in or third-party, receives and promises.

Where a sink's calls run. Async mode: in the delivery agent (`tracking.agent`), a process of its
own, for a sink named by entry point or given as a class (or `(name_or_class, {kwargs})`); a sink
given as an instance is the object that receives the events, served on a thread of the training
process, unless its class says ``portable = True`` (see below). A sink whose class says
``stay_in_process = True`` runs in the training process however it is given. Sync mode: on the
caller's thread. `python -m tracking replay`: its main thread. Never from two threads at once for
one sink instance. In the agent, calls run in a worker thread of its event loop, except the
``write`` and ``flush`` of a sink that sets ``blocking = False`` (they only touch local files and
return within milliseconds), which run on the loop's own thread.

A sink is any object with these four methods (`Sink` below). For each run it sees, in this order:

1. ``open(run)`` once, before any event. ``run`` is a `RunContext`. It may return a mapping of facts
   to record in the run's ``meta.json`` under the sink's name (the MLflow sink returns its run id).
   ``run.resume`` is None for a fresh delivery. When a delivery resumes (a new agent after a killed
   one, ``python -m tracking replay``) it is a `Resume`, with three fields:
   ``committed_seq``: every event of the run up to this seq is in the sink already; the first
   ``write`` starts with the event right after it. ``checkpoint``: what ``checkpoint()`` returned
   when that cursor was committed (None for a sink without one). ``facts``: what ``open``
   returned the first time (MLflow: ``mlflow_run_id``, ``tracking_uri``). A sink that says
   ``rebuild_on_resume = True`` gets ``committed_seq == 0`` and ``checkpoint is None``: every event
   again, from the first.
2. ``write(events)`` any number of times, with the run's events in the order they were logged, each
   event exactly once while calls succeed. Events are typed tuples (`tracking.sinks` has them: `Metrics`,
   `Params`, `Tag`, `Artifact`, `Figure`, `Experiment`, `Model`; ``event[0]`` is the kind; a sink
   ignores the kinds it has no use for): metric steps are resolved ints and values floats (NaN and
   ±inf included); artifact and figure events carry the path of a file, model events the path of a
   folder, inside the run directory, that nobody will modify.
3. ``flush()``: on return, everything written so far must be durable or visible to readers (files
   written, requests answered). Called when the user flushes, every ``commit_interval_s`` while
   events flow, and before the engine commits the sink's cursor.
4. ``close(status)`` once, at the end of the run, with "FINISHED", "FAILED" or "KILLED" (also when
   the training process was killed: the agent ends the run for it). After it the sink may be opened
   again for the tracker's next run.

Optional:

- ``checkpoint()``, called right after a successful ``flush()``: a JSON-able mapping saved with the
  cursor and handed back in ``run.resume.checkpoint``. A sink that appends to a file uses it to
  resume exactly where the cursor is (TensorBoard: the event file and its size).
- ``rebuild_on_resume = True``: the sink's output is rebuilt from the whole run (JSON: latest
  values, the per-step CSV), so a resumed delivery gives it every event again.
- ``blocking = False`` and ``stay_in_process = True``: see above.
- ``portable = True``: an instance is only its settings until ``open`` (define ``__reduce__`` to
  send those, not open files), so a copy pickled to the agent process serves as well as the
  instance itself. The built-in sinks say so. Without it, the instance you hold is the one called.

Delivery across a killed agent: what was committed is not sent again; the events after the cursor
are. That is exactly once for a sink with ``checkpoint`` or ``rebuild_on_resume`` (MLflow's SQL
stores drop repeated points themselves), at least once for any other.

Errors: a sink may raise from any method. `PermanentSinkError` from ``write`` says "these events can
never be accepted": with ``rejected=N`` the sink delivered the others itself; without it, the engine
splits the batch until it finds the refused events, delivers the rest, and counts those as
rejected. From ``open``, ``flush`` or ``close`` it says "give up": the sink gets nothing more this
run and its events wait in the journal for replay. Any other exception is transient: the engine
retries with exponential back-off (`RetryPolicy`), never calls the sink concurrently, and keeps
the sink's backlog in the journal, not in memory. A failing sink never blocks the others, and its
undelivered events can be replayed with ``python -m tracking replay``.

Sinks are found by name through the ``tracking.sinks`` entry-point group; a sink class is built with
no arguments when named by a string, so give every constructor argument a default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from ..core.errors import PermanentSinkError  # defined with the other exceptions; sinks import it from here
from ..journal.events import SinkEvent
from ..core.redact import DEFAULT_SECRET_KEY_PATTERNS

__all__ = ["Sink", "RunContext", "Resume", "PermanentSinkError"]


@dataclass(frozen=True)
class Resume:
    """Where an earlier delivery of this run to this sink stands (`RunContext.resume`)."""

    #: every event up to this seq is in the sink; `write` gets the events after it, in order
    committed_seq: int
    #: what the sink's `checkpoint()` returned when that cursor was committed (None: no checkpoint)
    checkpoint: Any = None
    #: what the sink's `open` returned the first time (the MLflow sink: its run id and store)
    facts: Mapping[str, Any] = field(default_factory=dict)


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
    #: where an earlier delivery of this run to the sink stands (a new agent, replay); None: fresh
    resume: Resume | None = None
    #: config/param/tag keys whose values a sink must mask before they leave the machine
    #: (`tracking.core.redact.redact_config`); local files keep them
    secret_key_patterns: tuple[str, ...] = DEFAULT_SECRET_KEY_PATTERNS


@runtime_checkable
class Sink(Protocol):
    """The four calls a sink answers; see the module docstring for the guarantees on each."""

    #: the name the sink reports under in stats(), meta.json and warnings
    name: str
    # Optional, not part of the protocol check: ``checkpoint()``, ``rebuild_on_resume``,
    # ``blocking``, ``stay_in_process`` and ``portable`` (see the module docstring).

    def open(self, run: RunContext) -> Mapping[str, Any] | None: ...

    def write(self, events: Sequence[SinkEvent]) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: str) -> None: ...
