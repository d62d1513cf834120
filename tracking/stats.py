"""What the tracker reports about itself: per-sink delivery state, `stats()` and the end-of-run report.

`SinkState` is written by whoever delivers to that sink (a worker lane, or the caller in sync mode)
and read by `stats()` on any thread: plain ints and strings, so a torn read is at worst one batch old.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["SinkState", "TrackerStats", "RunReport"]


@dataclass
class SinkState:
    """Delivery bookkeeping for one sink during one run."""

    name: str
    delivered: int = 0  #: events the sink accepted
    delivered_seq: int = 0  #: every event up to this journal seq was delivered or rejected
    rejected: int = 0  #: events in batches the sink refused with PermanentSinkError
    errors: int = 0  #: failed calls (each retried)
    failing: bool = False  #: the last call failed and the sink is in back-off
    last_error: str | None = None
    flushed_seq: int = -1  #: seq covered by the sink's last completed flush() (-1: none yet)
    opened: bool = False
    closed: bool = False
    facts: dict[str, Any] = field(default_factory=dict)  #: what open() returned, for meta.json

    def report(self, last_seq: int) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "delivered_seq": self.delivered_seq,
            "undelivered": max(last_seq - self.delivered_seq, 0),
            "rejected": self.rejected,
            "errors": self.errors,
            "last_error": self.last_error,
            "closed": self.closed,
            **self.facts,
        }


class TrackerStats(NamedTuple):
    """A snapshot of the tracker's queue and sinks (see `Tracker.stats`)."""

    queue_depth: int  #: events waiting in memory for the worker
    enqueued: int  #: events accepted from log calls in this run
    dropped: int  #: events dropped by the `drop` full-queue policy
    delivered: dict[str, int]  #: per sink
    undelivered: dict[str, int]  #: per sink: journaled but not (yet) delivered
    sink_errors: dict[str, int]  #: per sink: failed calls
    worker_lag_s: float  #: age of the oldest event the worker took in its latest batch
    journal_errors: int  #: batches that could not be written to the journal


@dataclass
class RunReport:
    """What `end_run()` returns: how the run ended and what did not arrive where."""

    run_id: str
    run_dir: Path
    status: str
    events: int
    dropped: int
    sinks: dict[str, dict[str, Any]]
    timed_out: bool = False
    replay_commands: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every sink holds every event and nothing was dropped."""
        return self.dropped == 0 and all(s["undelivered"] == 0 for s in self.sinks.values())

    def summary(self) -> str:
        lines = [f"run {self.run_id} ended {self.status}: {self.events} events"]
        if self.dropped:
            lines.append(f"  {self.dropped} events were dropped by the 'drop' full-queue policy")
        for name, sink in self.sinks.items():
            if sink["undelivered"] or sink["errors"] or sink["rejected"]:
                lines.append(
                    f"  sink {name!r}: {sink['undelivered']} undelivered, {sink['rejected']} rejected, "
                    f"{sink['errors']} errors (last: {sink['last_error']})"
                )
        if self.timed_out:
            lines.append("  the end-of-run deadline passed before every sink had caught up")
        for command in self.replay_commands:
            lines.append(f"  replay what is missing with: {command}")
        return "\n".join(lines)
