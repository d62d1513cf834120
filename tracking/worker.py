"""The background worker of async mode: drains the queue in batches and feeds one lane per sink.

Runs in its own thread ("tracking-worker") with an anyio event loop inside; sink calls run in anyio's
thread pool, or on this thread for sinks that only write local files (see `tracking.lane`). Callers
only touch it through `request_flush`, `request_stop` and the read-only attributes used by `stats()`.

The thread is a daemon so that a process whose main thread ends without `end_run()` still exits:
the atexit hook (`tracking.lifecycle`) flushes and stops it within a deadline, and the daemon flag
makes sure a stuck sink can never hold the interpreter past that deadline.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import anyio
import anyio.lowlevel

from .lane import SinkLane
from .queue import EventQueue, event_bytes
from .recorder import Recorder
from .stats import RunReport

__all__ = ["Worker", "FlushRequest", "StopRequest"]

_logger = logging.getLogger(__name__)

#: re-measure what a queued event weighs every this many batches
_MEASURE_EVERY_BATCHES = 16
_MEASURE_SAMPLE = 32


@dataclass(eq=False)
class FlushRequest:
    """A marker put in the queue by `flush()`: done when every healthy sink has flushed up to it."""

    seq: int | None = None  #: set by the worker: the last seq enqueued before the marker


@dataclass(eq=False)
class StopRequest:
    """A marker put in the queue by `end_run()`: the last item the worker takes for this run."""

    status: str
    deadline: float  #: time.monotonic() by which the worker gives up on slow sinks
    dropped: int = 0
    report: RunReport | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Owns the worker thread for one run."""

    def __init__(
        self,
        queue: EventQueue,
        recorder: Recorder,
        lanes: Sequence[SinkLane],
        batch_interval_s: float,
        batch_max_events: int,
    ) -> None:
        self.queue = queue
        self.recorder = recorder
        self.lanes = list(lanes)
        self.lag_s = 0.0
        self._batch_interval_s = batch_interval_s
        self._batch_max_events = batch_max_events
        self._batches = 0
        # Guards nothing but the wait in `wait_for`: lanes notify it when a flush completes or a
        # sink changes health, and flush() callers sleep on it instead of polling.
        self.progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="tracking-worker", daemon=True)

    # -- caller's thread ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def request_flush(self, timeout_s: float | None) -> bool:
        """Flush everything enqueued so far to every healthy sink; False if `timeout_s` passed first."""
        request = FlushRequest()
        self.queue.put_control(request)
        return self.wait_for(lambda: self._flushed(request), timeout_s)

    def request_stop(self, stop: StopRequest) -> RunReport | None:
        """Stop after everything enqueued so far; returns the report, or None if the deadline passed."""
        self.queue.put_control(stop)
        stop.done.wait(max(stop.deadline - time.monotonic(), 0) + 1.0)
        return stop.report

    def wait_for(self, predicate, timeout_s: float | None) -> bool:
        with self.progress:
            return self.progress.wait_for(lambda: predicate() or not self.is_alive(), timeout_s) and predicate()

    def _flushed(self, request: FlushRequest) -> bool:
        if request.seq is None:
            return False
        return all(
            lane.state.flushed_seq >= request.seq or lane.state.failing or lane.done.is_set()
            for lane in self.lanes
        )

    def notify(self) -> None:
        with self.progress:
            self.progress.notify_all()

    # -- worker thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            anyio.run(self._main)
        except BaseException:  # the loop itself must not die silently: say so, callers see is_alive()
            _logger.exception("tracking: the worker thread crashed; events may be left in the journal")
            self.notify()

    async def _main(self) -> None:
        async with anyio.create_task_group() as tg:
            for lane in self.lanes:
                tg.start_soon(lane.run)
            stop = await self._drain_until_stop()
            for lane in self.lanes:
                lane.finish(stop.status)
            with anyio.move_on_after(max(stop.deadline - time.monotonic(), 0)) as scope:
                for lane in self.lanes:
                    while not lane.done.is_set():
                        await anyio.sleep(0.01)
            tg.cancel_scope.cancel()  # lanes still retrying past the deadline: their events stay journaled
        stop.report = self.recorder.finish(
            stop.status, [lane.state for lane in self.lanes], stop.dropped, timed_out=scope.cancelled_caught
        )
        stop.done.set()
        self.notify()

    async def _drain_until_stop(self) -> StopRequest:
        wake = self.queue.wake
        while True:
            if not wake.is_set():
                await anyio.to_thread.run_sync(wake.wait, self._batch_interval_s, abandon_on_cancel=True)
            else:
                # Work is waiting, but the lanes (sinks called on this thread included) get their
                # turn first: a queue that never empties must not starve them into the journal.
                await anyio.lowlevel.checkpoint()
            wake.clear()
            stop = self._dispatch(self.queue.drain(self._batch_max_events))
            if stop is not None:
                # A thread that fetched the log method just before end_run() may append right
                # after the stop marker: take those too rather than lose them.
                self._dispatch(self.queue.drain(len(self.queue)))
                return stop
            if len(self.queue) >= self._batch_max_events:
                wake.set()  # more than one batch waiting: go again without sleeping

    def _dispatch(self, items: list) -> StopRequest | None:
        """Send events to the lanes in order, acting on markers where they stand among them."""
        events: list[tuple] = []
        stop = None
        for item in items:
            if type(item) is tuple:
                events.append(item)
                continue
            self._send(events)
            events = []
            if type(item) is FlushRequest:
                item.seq = self.recorder.last_seq
                for lane in self.lanes:
                    lane.offer_flush(item.seq)
                self.notify()
            elif type(item) is StopRequest:
                stop = item
        self._send(events)
        return stop

    def _send(self, events: list[tuple]) -> None:
        if not events:
            return
        self.lag_s = time.time() - events[0][-1]
        self._batches += 1
        if self._batches % _MEASURE_EVERY_BATCHES == 1:
            sample = events[:_MEASURE_SAMPLE]
            self.queue.set_event_bytes(sum(map(event_bytes, sample)) / len(sample))
        first_seq, prepared = self.recorder.record(events)
        for lane in self.lanes:
            lane.offer(first_seq, prepared)
