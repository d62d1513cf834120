"""What the tracker reports about itself: `stats()` while a run goes on, the `RunReport` at its end.

Built on the caller's thread from what the writer thread counts and what the delivery agents last
reported (each sink's report is a plain dict: see `tracking.delivery.engine.SinkSlot.report`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["TrackerStats", "RunReport"]


class TrackerStats(NamedTuple):
    """A snapshot of the tracker's queue, journal and sinks (see `Tracker.stats`)."""

    queue_depth: int  #: events waiting in memory for the writer thread
    enqueued: int  #: events accepted from log calls in this run
    dropped: int  #: events dropped by the `drop` full-queue policy
    delivered: dict[str, int]  #: per sink: events the sink accepted
    undelivered: dict[str, int]  #: per sink: journaled but not handed to it yet (after the run: not durable in it)
    sink_errors: dict[str, int]  #: per sink: failed calls
    writer_lag_s: float  #: age of the oldest event in the writer's latest batch
    journal_errors: int  #: journal appends the disk refused (the events were held and retried)
    agent_pid: int | None = None  #: the delivery agent process (None: sync mode, or no agent process)
    cursors: dict[str, int] = {}  #: per sink: every event up to this seq was delivered
    placement: dict[str, str] = {}  #: per sink: "agent" (its process), "thread" (this process) or "inline"
    journaled: int = 0  #: the last seq in the journal
    held: int = 0  #: events waiting for the disk to take the journal again
    mlflow_run_id: str | None = None  #: the MLflow run of this run, once the MLflow sink has made it

    @classmethod
    def of(cls, sinks: dict[str, dict[str, Any]], journaled: int, *, queue_depth: int = 0, held: int = 0,
           dropped: int = 0, writer_lag_s: float = 0.0, journal_errors: int = 0, agent_pid: int | None = None,
           ended: bool = False) -> TrackerStats:
        """From the sinks' reports: live (`undelivered` from where each was handed events), or, once
        the run `ended`, from its report (`undelivered` from where each is durable)."""
        return cls(
            queue_depth=queue_depth,
            enqueued=journaled + held + queue_depth,
            dropped=dropped,
            delivered={n: s["delivered"] for n, s in sinks.items()},
            undelivered={n: (s["undelivered"] if ended else max(journaled - s["delivered_seq"], 0))
                         for n, s in sinks.items()},
            sink_errors={n: s["errors"] for n, s in sinks.items()},
            writer_lag_s=writer_lag_s,
            journal_errors=journal_errors,
            agent_pid=agent_pid,
            cursors={n: s["delivered_seq"] for n, s in sinks.items()},
            placement={n: s.get("placement", "?") for n, s in sinks.items()},
            journaled=journaled,
            held=held,
            mlflow_run_id=next((s["mlflow_run_id"] for s in sinks.values() if s.get("mlflow_run_id")), None),
        )


@dataclass
class RunReport:
    """What `end_run()` returns: how the run ended and what did not arrive where.

    `sinks[name]["undelivered"]` counts the events not durable in that sink (after its committed
    cursor): what `python -m tracking replay` would send it.
    """

    run_id: str
    run_dir: Path
    status: str
    events: int
    dropped: int
    sinks: dict[str, dict[str, Any]]
    timed_out: bool = False
    replay_commands: list[str] = field(default_factory=list)
    #: `end_run(background=True)`: the agent is still delivering; `sinks` is where they stood
    background: bool = False
    #: events a log call accepted that never reached the journal, hence lost: the disk stayed full
    #: past what could be held, or (a bug) one could not be prepared or encoded (each logged)
    unrecorded: int = 0

    @property
    def complete(self) -> bool:
        """True when every sink holds every event and nothing was dropped or lost on the way."""
        return (self.dropped == 0 and self.unrecorded == 0 and not self.background
                and all(s["undelivered"] == 0 for s in self.sinks.values()))

    def summary(self) -> str:
        lines = [f"run {self.run_id} ended {self.status}: {self.events} events"]
        if self.dropped:
            lines.append(f"  {self.dropped} events were dropped by the 'drop' full-queue policy")
        if self.unrecorded:
            lines.append(f"  {self.unrecorded} events never reached the journal (see the errors logged) and are lost")
        for name, sink in self.sinks.items():
            if sink["undelivered"] or sink["errors"] or sink["rejected"]:
                lines.append(
                    f"  sink {name!r}: {sink['undelivered']} undelivered, {sink['rejected']} rejected, "
                    f"{sink['errors']} errors (last: {sink['last_error']})"
                )
        if self.background:
            lines.append("  the delivery agent finishes in the background; `python -m tracking show "
                         f"{self.run_dir}` says how far it is")
        elif self.timed_out:
            lines.append("  the end-of-run deadline passed before every sink had caught up")
        for command in self.replay_commands:
            lines.append(f"  replay what is missing with: {command}")
        return "\n".join(lines)
