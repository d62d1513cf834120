"""The sink contract: what every sink, built-in or third-party, receives and promises.

Where a sink's calls run. Async mode: in the delivery agent (`tracking.agent`), a process of its
own for a sink named by entry point, given as a class (or `(name_or_class, {kwargs})`), or given
as an instance that can be pickled; on a thread of the training process for an instance that can't
travel (not picklable, its class defined in `__main__`) or that says ``stay_in_process = True``.
Sync mode: on the caller's thread. `python -m tracking replay`: its main thread. Never from two
threads at once for one sink instance. In the agent, calls run in a worker thread of its event
loop, except the ``write`` and ``flush`` of a sink that sets ``blocking = False`` (they only touch
local files and return within milliseconds), which run on the loop's own thread.

A sink is any object with these four methods (`Sink` below). For each run it sees, in this order:

1. ``open(run)`` once, before any event. ``run`` is a `RunContext`. It may return a mapping of facts
   to record in the run's ``meta.json`` under the sink's name (the MLflow sink returns its run id).
   ``run.resume`` is empty for a fresh delivery. When a delivery resumes (a new agent after a
   killed one, a replay) it holds the facts the sink returned before, ``delivered_seq`` (the
   committed cursor: the sink gets the events after it) and ``checkpoint`` (see below).
2. ``write(events)`` any number of times, with the run's events in the order they were logged, each
   event exactly once while calls succeed. Events are typed tuples (`tracking.events`: `Metrics`,
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
  cursor and handed back in ``run.resume["checkpoint"]``. A sink that appends to a file uses it to
  resume exactly where the cursor is (TensorBoard: the event file and its size).
- ``rebuild_on_resume = True``: the sink's output is rebuilt from the whole run (JSON: latest
  values, the per-step CSV), so a resumed delivery gives it every event again.
- ``blocking = False`` and ``stay_in_process = True``: see above.

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
no arguments when named by a string, so give every constructor argument a default. A sink sent to
an agent process is pickled: define ``__reduce__`` to send its settings rather than its state.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from ..errors import PermanentSinkError  # defined with the other exceptions; sinks import it from here
from ..events import SinkEvent
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
    #: what an earlier delivery of this run committed (a resumed agent, replay): the sink's facts
    #: (e.g. the MLflow run id), `delivered_seq` and `checkpoint`; empty for a fresh delivery
    resume: Mapping[str, Any] = field(default_factory=dict)
    #: config/param/tag keys whose values a sink must mask before they leave the machine
    #: (`tracking.redact.redact_config`); local files keep them
    secret_key_patterns: tuple[str, ...] = DEFAULT_SECRET_KEY_PATTERNS


@runtime_checkable
class Sink(Protocol):
    """The four calls a sink answers; see the module docstring for the guarantees on each."""

    #: the name the sink reports under in stats(), meta.json and warnings
    name: str
    # Optional, not part of the protocol check: ``checkpoint()``, ``rebuild_on_resume``,
    # ``blocking`` and ``stay_in_process`` (see the module docstring).

    def open(self, run: RunContext) -> Mapping[str, Any] | None: ...

    def write(self, events: Sequence[SinkEvent]) -> None: ...

    def flush(self) -> None: ...

    def close(self, status: str) -> None: ...
