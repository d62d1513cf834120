"""The writer thread: the one background thread of async mode in the training process.

Runs in its own daemon thread ("tracking-writer"). Every `batch_interval_s` (sooner when the queue
fills) it drains the queue, has the run's `RunJournal` prepare and journal the batch in one write,
and wakes the delivery agents (a byte on each agent's wake pipe, never blocking). That is all the training process
does for a logged event: no sink code, no per-sink state, no encoding for a sink.

Callers touch it only through `request_flush`, `request_stop` (control markers in the same queue,
which the drop policy never drops) and read-only attributes. The thread is a daemon so that a
process whose main thread ends without `end_run()` still exits: the atexit hook
(`tracking.recorder.lifecycle`) stops it within a deadline first.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

from .queue import EventQueue, event_bytes
from .batch import RunJournal
from .threads import TrackerThread

__all__ = ["WriterThread", "FlushMarker", "StopMarker"]

_logger = logging.getLogger(__name__)

#: re-measure what a queued event weighs every this many batches
_MEASURE_EVERY_BATCHES = 16
_MEASURE_SAMPLE = 32
#: how long request_stop() waits for the thread to return once its stop marker is done
_EXIT_JOIN_S = 1.0


class FlushMarker:
    """Put in the queue by `flush()`: done once everything before it is journaled (and fsynced)."""

    __slots__ = ("seq", "complete", "done")

    def __init__(self) -> None:
        self.seq = 0  #: the last seq journaled when the marker was reached
        self.complete = False  #: False if events before it are still held (the disk is full)
        self.done = threading.Event()


class StopMarker:
    """Put in the queue by `end_run()`: the last item the writer takes for this run."""

    __slots__ = ("status", "seq", "done")

    def __init__(self, status: str) -> None:
        self.status = status
        self.seq = 0  #: the run's last seq, once done
        self.done = threading.Event()


class WriterThread:
    """Owns the run's queue and the thread that journals it."""

    def __init__(
        self,
        run_journal: RunJournal,
        wakers: Sequence[Callable[[], None]],
        memory_budget_bytes: int,
        full_queue_policy: str,
        batch_interval_s: float,
        batch_max_events: int,
    ) -> None:
        self.journal = run_journal
        self.queue = EventQueue(memory_budget_bytes, full_queue_policy, wake_at_events=batch_max_events,
                                is_consumer_alive=self.is_alive)
        self.lag_s = 0.0  #: age of the oldest event in the latest batch
        self.unrecorded = 0  #: events of batches the writer could not handle (logged; never fatal)
        self._wakers = list(wakers)  # each agent link's wake(): a byte on its wake pipe, never blocking
        self._batch_interval_s = batch_interval_s
        self._batch_max_events = batch_max_events
        self._batches = 0
        self._markers_seen = 0  # control markers taken from the queue so far
        self.thread = TrackerThread(self._run, "tracking-writer")

    # -- caller's thread -------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def request_flush(self, timeout_s: float | None) -> FlushMarker | None:
        """Journal everything put so far; returns the marker, or None if `timeout_s` passed first."""
        marker = FlushMarker()
        self.queue.put_control(marker)
        return marker if self._wait(marker.done, timeout_s) else None

    def request_stop(self, status: str, timeout_s: float) -> StopMarker | None:
        """Journal everything put so far and end the journal; None if the thread did not finish."""
        marker = StopMarker(status)
        self.queue.put_control(marker)
        if not self._wait(marker.done, timeout_s):
            return None
        self.thread.join(_EXIT_JOIN_S)  # it returns right after the marker: leave no thread behind
        return marker

    def _wait(self, done: threading.Event, timeout_s: float | None) -> bool:
        """Wait for `done`, but not for a thread that has died (its markers would never complete)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not done.is_set():
            if not self.is_alive():
                return done.is_set()
            remaining = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if remaining <= 0:
                return False
            done.wait(remaining)
        return True

    # -- writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # never silently: callers see is_alive() turn False, and the log says why
            _logger.exception("the writer thread crashed; what was journaled is delivered")

    def _loop(self) -> None:
        queue, wake = self.queue, self.queue.wake
        while True:
            if not wake.is_set():
                wake.wait(self._batch_interval_s)
            wake.clear()
            stop = self._handle(queue.drain(self._batch_max_events))
            if stop is not None:
                # A thread that fetched the log method just before end_run() may append right
                # after the stop marker: take those too rather than lose them.
                self._handle(queue.drain(len(queue)))
                self._finish(stop)
                return
            if len(queue) >= self._batch_max_events:
                wake.set()  # more than one batch waiting: go again without sleeping

    def _handle(self, items: list) -> StopMarker | None:
        """Journal the events in order, acting on markers where they stand among them."""
        if self.queue.markers_put == self._markers_seen:
            self._record(items)  # the common case: no marker was put since the last one handled
            return None
        events: list[tuple] = []
        stop = None
        for item in items:
            if type(item) is tuple:
                events.append(item)
                continue
            self._markers_seen += 1  # counted as found: one counted but not yet appended is still to come
            self._record(events)
            events = []
            if type(item) is FlushMarker:
                self.journal.sync()  # a flush is also a durability point
                item.seq, item.complete = self.journal.last_seq, self.journal.held == 0
                item.done.set()
            elif type(item) is StopMarker:
                stop = item
        self._record(events)
        return stop

    def _record(self, events: list[tuple]) -> None:
        if not events and not self.journal.held:
            return  # (with events held for a full disk, every round tries again)
        if events:
            self.lag_s = time.time() - events[0][-1]
        self._batches += 1
        if events and self._batches % _MEASURE_EVERY_BATCHES == 1:
            sample = events[:_MEASURE_SAMPLE]
            self.queue.set_event_bytes(sum(map(event_bytes, sample)) / len(sample))
        try:
            journaled = self.journal.record(events)
        except Exception:  # the loop must outlive anything a batch can do
            self.unrecorded += len(events)
            _logger.exception("a batch of %d events could not be journaled", len(events))
            return
        if journaled is not None:
            self._wake_agents()

    def _wake_agents(self) -> None:
        for wake in self._wakers:
            wake()

    def _finish(self, stop: StopMarker) -> None:
        self.journal.close(stop.status)
        stop.seq = self.journal.last_seq
        self._wake_agents()
        stop.done.set()

