"""The delivery engine: one sink's delivery of one run, written once for async, sync and replay.

A `SinkSlot` is driven by one thread at a time: the agent's event loop (or one of its pool threads,
for a sink that may block), the caller's thread in sync mode, or the main thread of `python -m
tracking replay`. Other threads only read its counters (plain values: a torn read is at worst one
call old).

The slot knows how far its sink has got (its cursor into the journal), makes every call into the
sink, and classifies each outcome in one place, `call`:

- DELIVERED: the call returned.
- REJECTED: `write` raised `PermanentSinkError`: those events will never be accepted. The batch is
  split until the refused events are found (unless the error says how many it refused and that
  the sink took the rest); they are counted as rejected and the cursor moves past them.
- TRANSIENT: anything else: counted, logged once per failure spell, retried after back-off
  (`retry_at`). After `RetryPolicy.give_up_after_s` of failing, the slot gives up.
- GAVE_UP: `PermanentSinkError` from `open`, `flush` or `close`, or the give-up time passed: the sink
  gets nothing more this run; its events stay in the journal for replay.

A driver only decides *when* to call (how it waits for back-off and for new events). The cursor is
committed (`commit`: the sink's `flush`, then its optional `checkpoint`, then the state file) so that
a new deliverer resumes exactly there.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import os
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.errors import SinkBusyError
from ..sinks.base import PermanentSinkError, Resume, RunContext, Sink
from ..journal import JournalReader
from ..journal.reader import DEFAULT_CHUNK_EVENTS
from .cursors import DeliveryStore

__all__ = ["Outcome", "SlotState", "RetryPolicy", "SinkSlot", "replay_command"]

_logger = logging.getLogger(__name__)

#: rejected events described in a warning per slot; the rest are only counted
_REJECTION_WARNINGS = 5


class Outcome(enum.Enum):
    """What one call into a sink came to."""

    DELIVERED = "delivered"
    REJECTED = "rejected"
    TRANSIENT = "transient"
    GAVE_UP = "gave up"


class SlotState(enum.Enum):
    """Where a sink is in one run's delivery."""

    NEW = "new"  #: not opened yet
    OPEN = "open"  #: opened, and the last call succeeded
    FAILING = "failing"  #: the last call failed (`open` too: see `SinkSlot.opened`); retried at `retry_at`
    GAVE_UP = "gave up"  #: nothing more is sent this run; the journal keeps the rest
    CLOSED = "closed"  #: closed with the run's status: every event up to the cursor is durable


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off between retries of a failing sink call, and when to stop trying.

    give_up_after_s: a sink that keeps failing for this long gets nothing more this run (its events
        wait in the journal for replay); None retries until the run's end deadline.
    """

    initial_s: float = 0.2
    max_s: float = 10.0
    give_up_after_s: float | None = None

    def __post_init__(self) -> None:
        if not self.initial_s > 0 or not self.max_s >= self.initial_s:
            raise ValueError(f"RetryPolicy needs 0 < initial_s <= max_s, got {self.initial_s!r}, {self.max_s!r}")
        if self.give_up_after_s is not None and not self.give_up_after_s > 0:
            raise ValueError(f"give_up_after_s must be > 0 or None, got {self.give_up_after_s!r}")

    def delay_s(self, failures: int) -> float:
        """The wait before retry number `failures` (1 for the first retry)."""
        return min(self.initial_s * 2 ** max(failures - 1, 0), self.max_s)


class SinkSlot:
    """One sink's delivery of one run: its cursor, its health, and every call into it.

    Args:
        sink: the sink.
        run: the run, as sinks see it; the slot adds what it resumes from (`RunContext.resume`).
        retry: the back-off policy.
        lock: held for every call into the sink. Owned by whoever owns the sink, so that it
            outlives this run: a call abandoned at an end-of-run deadline keeps running, and the
            next run's first call waits for it; a sink is never called from two threads at once.
        store: where the state is committed (None: nowhere, e.g. in tests).
        placement: where the sink runs, for stats(): "agent", "thread", "inline" or "replay".
        saved: the state to resume from when the store has none (a run recorded before state files).
    """

    def __init__(
        self,
        sink: Sink,
        run: RunContext,
        *,
        retry: RetryPolicy,
        lock: threading.Lock | None = None,
        store: DeliveryStore | None = None,
        placement: str = "inline",
        saved: Mapping[str, Any] | None = None,
    ) -> None:
        self.sink = sink
        self.name: str = sink.name
        self.blocking = getattr(sink, "blocking", True) is not False
        self.placement = placement
        self.lock = lock if lock is not None else threading.Lock()
        self._retry = retry
        self._store = store
        self.state = SlotState.NEW
        self.opened = False  #: open() succeeded; a driver opens (or re-opens after a failed open) first
        self.delivered_seq = 0  #: every event up to this seq was handed to the sink (or rejected, or lost)
        self.committed_seq = 0  #: every event up to this seq is durable in the sink
        self.delivered = 0  #: events the sink accepted
        self.rejected = 0  #: events the sink refused for good
        self.lost = 0  #: events the journal could not give back (a damaged line)
        self.errors = 0  #: failed calls
        self.journal_chunks = 0  #: chunks read back from the journal (the sink fell behind what is in memory)
        self.last_error: str | None = None
        self.facts: dict[str, Any] = {}
        self.checkpoint: Any = None
        self.retry_at = 0.0  #: time.monotonic() before which the failing call is not retried
        self.last_commit = time.monotonic()
        self._committed_counts = (0, 0, 0)  # (delivered, rejected, lost) as of committed_seq
        self._failures = 0
        self._failing_since: float | None = None
        self._resumed = self._resume((store.load(self.name) if store is not None else None) or saved)
        self.run = dataclasses.replace(run, resume=self._resume_context())

    @classmethod
    def claim(cls, sink: Sink, run: RunContext, store: DeliveryStore, **kwargs: Any) -> SinkSlot:
        """A slot resumed from the sink's committed state once this process is its one deliverer;
        a slot that has given up (and says why) when another live process delivers it."""
        try:
            store.claim(sink.name)
        except (SinkBusyError, OSError) as exc:
            slot = cls(sink, run, **kwargs)
            slot.state, slot.last_error = SlotState.GAVE_UP, str(exc)
            _logger.error("%s", exc)
            return slot
        return cls(sink, run, store=store, **kwargs)

    # -- state ---------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Gave up or closed: nothing more will be called."""
        return self.state is SlotState.GAVE_UP or self.state is SlotState.CLOSED

    @property
    def healthy(self) -> bool:
        """Not failing and not given up: flush() waits for it."""
        return self.state is SlotState.NEW or self.state is SlotState.OPEN or self.state is SlotState.CLOSED

    def ready(self, now: float | None = None) -> bool:
        """May be called now: not done, and not waiting out a back-off."""
        return not self.done and (now if now is not None else time.monotonic()) >= self.retry_at

    def _resume(self, saved: Mapping[str, Any] | None) -> bool:
        """Continue from a committed state (a new agent after a killed one, a replay)."""
        committed = int((saved or {}).get("committed_seq", 0))
        if not committed:
            return False
        self.facts = dict(saved.get("facts") or {})
        if getattr(self.sink, "rebuild_on_resume", False):
            return True  # its files are rebuilt from the whole journal: deliver everything again
        self.delivered_seq = self.committed_seq = committed
        for counter in ("delivered", "rejected", "lost", "errors"):
            setattr(self, counter, int(saved.get(counter, 0)))
        self._committed_counts = (self.delivered, self.rejected, self.lost)
        self.checkpoint = saved.get("checkpoint")
        return True

    def _resume_context(self) -> Resume | None:
        if not self._resumed:
            return None
        return Resume(self.committed_seq, self.checkpoint, dict(self.facts))

    # -- the one place a sink is called -------------------------------------------------------

    def call(self, method: str, *args: Any) -> tuple[Outcome, Any]:
        """Call `sink.method(*args)` under the sink's lock; returns (outcome, result or exception)."""
        try:
            with self.lock:
                result = getattr(self.sink, method)(*args)
        except PermanentSinkError as exc:
            if method == "write":
                return Outcome.REJECTED, exc
            self._give_up(f"{method}: {exc}")
            return Outcome.GAVE_UP, exc
        except Exception as exc:  # a sink may raise anything; it must never reach the caller
            return self._failed(method, exc), exc
        if self.state is SlotState.FAILING:
            _logger.warning("sink %r recovered; catching up", self.name)
            self.state = SlotState.OPEN
        self._failures, self._failing_since = 0, None
        return Outcome.DELIVERED, result

    def _failed(self, method: str, exc: BaseException) -> Outcome:
        now = time.monotonic()
        self.errors += 1
        self._failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._failing_since is None:
            self._failing_since = now
            _logger.warning("sink %r failed in %s (%s); retrying with back-off, other sinks go on",
                            self.name, method, self.last_error)
        give_up_after = self._retry.give_up_after_s
        if give_up_after is not None and now - self._failing_since >= give_up_after:
            self._give_up(f"failing for {now - self._failing_since:.0f} s (last: {self.last_error})")
            return Outcome.GAVE_UP
        self.state = SlotState.FAILING
        self.retry_at = now + self._retry.delay_s(self._failures)
        return Outcome.TRANSIENT

    def _give_up(self, reason: str) -> None:
        self.state = SlotState.GAVE_UP
        self.last_error = reason
        _logger.error("sink %r gave up (%s); its events stay in the journal: replay them with %s",
                      self.name, reason, replay_command(self.run.run_dir, self.name))
        self._save()

    # -- the contract's four calls -------------------------------------------------------------

    def open(self) -> Outcome:
        outcome, facts = self.call("open", self.run)
        if outcome is Outcome.DELIVERED:
            self.facts.update(facts or {})
            self.state = SlotState.OPEN
            self.opened = True
            self._save()
        return outcome

    def write(self, first_seq: int, events: Sequence[Any]) -> Outcome:
        """Deliver `events` (seqs from `first_seq`; those at or before the cursor are skipped).

        None entries are events the journal could not give back: skipped and counted as lost.
        Returns DELIVERED once the cursor is past every event (some may have been rejected), or the
        outcome that stopped it (the cursor is then past what was handled).
        """
        skip = self.delivered_seq + 1 - first_seq
        if skip > 0:
            events, first_seq = events[skip:], first_seq + skip
        self.skip_to(first_seq)  # seqs between the cursor and these were unreadable: lost
        if not events:
            return Outcome.DELIVERED
        last_seq = first_seq + len(events) - 1
        seqs: list[int] | None = None
        if None in events:
            seqs = [first_seq + i for i, event in enumerate(events) if event is not None]
            events = [event for event in events if event is not None]
        outcome = self._write_isolating(first_seq, events, seqs) if events else Outcome.DELIVERED
        if outcome is Outcome.DELIVERED:
            self._advance(last_seq, handled=0)  # past trailing unreadable events too
        return outcome

    def _write_isolating(self, first_seq: int, events: Sequence[Any], seqs: list[int] | None) -> Outcome:
        """Write `events`; on a rejection of many, split until the refused ones are found."""
        pending = [(0, len(events))]
        while pending:
            lo, hi = pending.pop()
            chunk = events if (lo, hi) == (0, len(events)) else events[lo:hi]
            outcome, exc = self.call("write", chunk)
            end_seq = (seqs[hi - 1] if seqs is not None else first_seq + hi - 1)
            if outcome is Outcome.DELIVERED:
                self.delivered += hi - lo
                self._advance(end_seq, handled=hi - lo)
            elif outcome is Outcome.REJECTED:
                refused = getattr(exc, "rejected", None)
                if refused is None and hi - lo > 1:
                    mid = (lo + hi) // 2
                    pending += [(mid, hi), (lo, mid)]  # the left half first
                    continue
                refused = 1 if refused is None else max(0, min(int(refused), hi - lo))
                self._rejected(refused, hi - lo - refused, chunk, exc)
                self._advance(end_seq, handled=hi - lo)
            else:
                return outcome
        return Outcome.DELIVERED

    def _rejected(self, refused: int, accepted: int, chunk: Sequence[Any], exc: BaseException) -> None:
        self.rejected += refused
        self.delivered += accepted
        self.last_error = f"rejected {refused} event(s): {exc}"
        if self.rejected - refused < _REJECTION_WARNINGS:
            example = chunk[0] if len(chunk) == 1 else f"{refused} of {len(chunk)} events"
            _logger.warning("sink %r refused %.200r for good (%s); the other events are delivered",
                            self.name, example, exc)

    def _advance(self, seq: int, handled: int) -> None:
        """Move the cursor to `seq`; seqs passed over but not handled were unreadable (lost)."""
        if seq <= self.delivered_seq:
            return
        self.lost += max(seq - self.delivered_seq - handled, 0)
        self.delivered_seq = seq

    def skip_to(self, seq: int) -> None:
        """Pass over seqs before `seq` that the journal can't give back (a damaged line)."""
        if seq - 1 > self.delivered_seq:
            self._advance(seq - 1, handled=0)

    def deliver_from(self, reader: JournalReader, upto: int, max_events: int = DEFAULT_CHUNK_EVENTS) -> Outcome:
        """Read the next chunk after the cursor (at most `max_events`, none past `upto`) from the
        journal and write it: how a sink behind what is in memory catches up, in every driver."""
        self.journal_chunks += 1
        first, events = reader.read(self.delivered_seq + 1, max_events, upto)
        if not events:
            # Journaled seqs the reader can't give back (a damaged line, or a torn last line of a
            # killed writer): pass over them rather than wait for ever.
            self.skip_to(first if first > self.delivered_seq + 1 else upto + 1)
            return Outcome.DELIVERED
        return self.write(first, events)

    def commit(self) -> Outcome:
        """Make everything delivered durable (`flush`), then save the cursor with the checkpoint."""
        seq = self.delivered_seq
        outcome, _ = self.call("flush")
        if outcome is not Outcome.DELIVERED:
            return outcome
        if callable(getattr(self.sink, "checkpoint", None)):
            outcome, checkpoint = self.call("checkpoint")
            if outcome is not Outcome.DELIVERED:
                return outcome
            self.checkpoint = checkpoint
        self.committed_seq = max(self.committed_seq, seq)
        self._committed_counts = (self.delivered, self.rejected, self.lost)
        self.last_commit = time.monotonic()
        self._save()
        return Outcome.DELIVERED

    def close(self, status: str) -> Outcome:
        seq = self.delivered_seq
        outcome, _ = self.call("close", status)
        if outcome is Outcome.DELIVERED:
            self.committed_seq = max(self.committed_seq, seq)
            self._committed_counts = (self.delivered, self.rejected, self.lost)
            self.state = SlotState.CLOSED
            self.checkpoint = None
            self._save()
        return outcome

    # -- reporting -----------------------------------------------------------------------------

    def report(self, last_seq: int) -> dict[str, Any]:
        """The slot as `RunReport.sinks[name]`, meta.json and `show` give it.

        `undelivered` counts what is not durable in the sink yet (after its committed cursor): what
        a replay would send. `delivered_seq` is how far the sink has been handed events.
        """
        return {
            "delivered": self.delivered,
            "delivered_seq": self.delivered_seq,
            "committed_seq": self.committed_seq,
            "undelivered": max(last_seq - self.committed_seq, 0),
            "rejected": self.rejected,
            "lost": self.lost,
            "errors": self.errors,
            "last_error": self.last_error,
            "journal_chunks": self.journal_chunks,
            "state": self.state.value,
            "closed": self.state is SlotState.CLOSED,
            "placement": self.placement,
            **self.facts,
        }

    def _save(self) -> None:
        if self._store is None:
            return
        delivered, rejected, lost = self._committed_counts  # the counts as of the committed cursor
        state = {
            "committed_seq": self.committed_seq, "delivered": delivered, "rejected": rejected, "lost": lost,
            "errors": self.errors, "last_error": self.last_error, "state": self.state.value,
            "checkpoint": self.checkpoint, "facts": self.facts, "placement": self.placement, "pid": os.getpid(),
            "updated": time.time(),
        }
        try:
            self._store.save(self.name, state)
        except OSError as exc:  # the disk is full: delivery goes on; a resume would start earlier
            _logger.warning("cannot save the delivery state of sink %r (%s)", self.name, exc)


def replay_command(run_dir: str | os.PathLike | Path, sink: str) -> str:
    """The shell command that delivers a run's journal to `sink` (credentials never appear here).

    Our console script where it is installed beside this interpreter: unlike ``python -m
    tracking``, it does not look for the package in the working directory first, where a folder of
    the user's named `tracking` would stand in for ours."""
    script = Path(sys.executable).with_name("batteryml-tracking")
    program = shlex.quote(str(script)) if script.is_file() else f"{shlex.quote(sys.executable)} -m tracking"
    return f"{program} replay {shlex.quote(str(run_dir))} --to {shlex.quote(sink)}"
