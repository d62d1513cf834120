"""Sync mode: the run's journal and every sink, called inside each log call, by the same engine.

Runs on the caller's thread (whichever thread logs); a lock keeps events in one order when several
threads log at once. It is the baseline every benchmark compares async mode against: each log call
pays for the journal and every sink before it returns.

A sink that fails is not retried inside the call that saw it fail (that would stall the caller):
its slot waits out its back-off, and the first call after that catches it up from the journal.
`flush` and `end_run` catch every sink up, within their deadline.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Protocol, Sequence

from ..journal.events import sink_event
from ..journal import JournalReader
from ..sinks.base import RunContext, Sink
from .cursors import DeliveryStore
from .engine import Outcome, RetryPolicy, SinkSlot

__all__ = ["InlineDelivery", "Journal"]


class Journal(Protocol):
    """What sync mode needs of its run's journal (the recorder's `RunJournal`): record a batch in
    order (None while the disk holds it back), and end it."""

    held: int  #: events waiting for the disk to take them
    last_seq: int

    def record(self, events: Sequence[tuple]) -> tuple[int, list[Any]] | None: ...

    def close(self, status: str) -> None: ...


class InlineDelivery:
    """Delivers each event to every sink before the log call returns."""

    def __init__(
        self,
        run_journal: Journal,
        sinks: Sequence[tuple[Sink, threading.Lock]],
        run: RunContext,
        retry: RetryPolicy,
        commit_interval_s: float = 1.0,
    ) -> None:
        self.journal = run_journal
        self.reader = JournalReader(run.run_dir)
        self.store = DeliveryStore(run.run_dir)
        self.slots = [SinkSlot.claim(sink, run, self.store, retry=retry, lock=lock, placement="inline")
                      for sink, lock in sinks]
        self._commit_interval_s = commit_interval_s
        # Guards the journal and the slots: one event at a time, in one order, for every thread.
        self._lock = threading.RLock()
        for slot in self.slots:
            if not slot.done:
                slot.open()

    def emit(self, event: tuple) -> None:
        with self._lock:
            journaled = self.journal.record((event,))
            if journaled is None:
                return  # held until the disk takes it; delivered then
            first, events = journaled
            typed = [sink_event(e) for e in events]
            now = time.monotonic()
            for slot in self.slots:
                if slot.ready(now) and self._caught_up(slot, first - 1, None):
                    slot.write(first, typed)
                    if now - slot.last_commit >= self._commit_interval_s:
                        slot.commit()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Catch every sink up and commit it; False if a healthy sink is still behind."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            if self.journal.held:
                self.journal.record(())
            last = self.journal.last_seq
            for slot in self.slots:
                if slot.ready() and self._caught_up(slot, last, deadline):
                    slot.commit()
            return self.journal.held == 0 and all(
                s.committed_seq >= last for s in self.slots if s.healthy and not s.done)

    def stop(self, status: str, timeout_s: float) -> tuple[int, dict[str, dict], bool]:
        """End the journal, catch every sink up and close it within `timeout_s`.

        Returns (last seq, the sinks' reports, whether the deadline passed first).
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self.journal.close(status)
            last = self.journal.last_seq
            for slot in self.slots:
                self._finish(slot, last, status, deadline)
            timed_out = any(not s.done for s in self.slots)
            self.store.release_all()
            return last, {s.name: s.report(last) for s in self.slots}, timed_out

    # -- internals -----------------------------------------------------------------------------

    def _caught_up(self, slot: SinkSlot, upto: int, deadline: float | None) -> bool:
        """Open the sink if it is not, and bring it to `upto` from the journal; False if it can't now."""
        if not slot.opened:  # new, or its open failed
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if slot.open() is not Outcome.DELIVERED:
                return False
        while slot.delivered_seq < upto:
            if slot.done or not slot.ready() or (deadline is not None and time.monotonic() >= deadline):
                return False
            if slot.deliver_from(self.reader, upto) is not Outcome.DELIVERED:
                return False
        return not slot.done

    def _finish(self, slot: SinkSlot, last: int, status: str, deadline: float) -> None:
        """Catch up and close, waiting out back-offs until the deadline (never longer)."""
        while not slot.done:
            now = time.monotonic()
            if now >= deadline:
                return
            if not slot.ready(now):
                time.sleep(min(slot.retry_at, deadline) - now)
                continue
            if self._caught_up(slot, last, deadline) and slot.close(status) is Outcome.DELIVERED:
                return
