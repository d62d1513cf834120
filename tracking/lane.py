"""A sink lane: delivers a run's batches to one sink, with retries, without holding up other sinks.

Runs as an anyio task in the worker thread's event loop; each sink call runs in a thread of anyio's
pool (`to_thread.run_sync`), one call at a time per sink, so a slow sink only delays its own lane.
A sink that says ``blocking = False`` (local files only: JSON, TensorBoard) has its `write` and
`flush` called on the worker's thread itself, as the journal is written; `open` and `close` still
go to the pool.

Back-pressure: the lane's inbox holds at most `max_backlog_events` events. When the sink falls
further behind, the worker stops copying batches into the inbox and the lane later reads what it
skipped from the journal on disk: a slow sink costs neither memory nor the training loop's time.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import anyio

from .journal import iter_journal
from .recorder import Recorder, replay_command
from .sinks.base import PermanentSinkError, RunContext, Sink
from .stats import SinkState

__all__ = ["SinkLane", "RetryPolicy"]

_logger = logging.getLogger(__name__)

#: events read back from the journal per write() when a lane catches up (at least a batch line's
#: worth, so that a line is decoded about once, not once per chunk in it)
_CATCH_UP_CHUNK = 20_000

@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off between retries of a failed sink call."""

    initial_s: float = 0.2
    max_s: float = 10.0


class _Batch:
    __slots__ = ("first_seq", "events")

    def __init__(self, first_seq: int, events: list[tuple]) -> None:
        self.first_seq = first_seq
        self.events = events


class _FlushNotice:
    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq


class SinkLane:
    """One sink's delivery for one run."""

    def __init__(
        self,
        sink: Sink,
        run: RunContext,
        recorder: Recorder,
        retry: RetryPolicy,
        max_backlog_events: int,
        notify: Callable[[], None],
        sink_lock: threading.Lock,
    ) -> None:
        self.sink = sink
        # A non-blocking sink (local files only) is written on the worker's own thread: no pool
        # thread to wake and come back from, twice a batch.
        self._blocking = getattr(sink, "blocking", True) is not False
        self.state = SinkState(name=sink.name)
        self.done = threading.Event()
        self._run = run
        self._recorder = recorder
        self._retry = retry
        self._max_backlog = max_backlog_events
        self._notify = notify
        self._backlog = 0
        self._dead = False  # open() refused for good, or the lane itself failed: deliver nothing
        # Held for every call into the sink; owned by the tracker, so it outlives this run's lane.
        # A call abandoned at the end-of-run deadline keeps running in its pool thread; the lock
        # makes the next run's open() wait for it: a sink is never called from two threads at once.
        self._lock = sink_lock
        self._status = "FINISHED"
        self._send, self._recv = anyio.create_memory_object_stream(math.inf)

    # -- called by the worker's drain loop (same event loop) -----------------------------------

    def offer(self, first_seq: int, events: list[tuple]) -> None:
        """Queue a batch for the sink, or leave it to the journal if the sink is too far behind."""
        if self._dead:
            return  # reported once; the journal keeps the events for replay
        if self._backlog + len(events) > self._max_backlog and self._recorder.journal_ok:
            return  # the lane notices the gap and reads it back from the journal
        self._backlog += len(events)
        self._send.send_nowait(_Batch(first_seq, events))

    def offer_flush(self, seq: int) -> None:
        self._send.send_nowait(_FlushNotice(seq))

    def finish(self, status: str) -> None:
        """No more batches: deliver what is left, then close the sink with `status`."""
        self._status = status
        self._send.close()

    # -- the lane's task -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._serve()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # one sink's lane must never take the others down with it
            self._die(exc)
        finally:
            self.done.set()
            self._notify()

    def _die(self, exc: BaseException) -> None:
        self._dead = True
        self.state.failing = True
        self.state.last_error = f"{type(exc).__name__}: {exc}"
        _logger.error(
            "tracking: sink %r gave up (%s); its events stay in the journal: replay them with %s",
            self.sink.name, self.state.last_error, replay_command(self._recorder.run_dir, self.sink.name),
        )

    async def _serve(self) -> None:
        await self._open()
        async with self._recv:
            async for item in self._recv:
                if type(item) is _Batch:
                    self._backlog -= len(item.events)
                    await self._catch_up(item.first_seq - 1)
                    await self._deliver(item.first_seq, item.events)
                else:
                    await self._flush(item.seq)
        await self._catch_up(self._recorder.last_seq)
        await self._call(self.sink.close, self._status)
        self.state.closed = True

    async def _open(self) -> None:
        facts = await self._call(self.sink.open, self._run)
        self.state.facts.update(facts or {})
        self.state.opened = True
        if facts:
            self._recorder.note_facts({self.sink.name: dict(facts)})

    async def _deliver(self, first_seq: int, events: Sequence[tuple]) -> None:
        if first_seq + len(events) - 1 <= self.state.delivered_seq:
            return  # already delivered from the journal while catching up
        try:
            await self._call(self.sink.write, events, inline=True)
        except PermanentSinkError as exc:
            self.state.rejected += len(events)
            self.state.last_error = f"rejected {len(events)} events: {exc}"
            _logger.warning("tracking: sink %r rejected %d events: %s", self.sink.name, len(events), exc)
        else:
            self.state.delivered += len(events)
        self.state.delivered_seq = first_seq + len(events) - 1

    async def _catch_up(self, upto_seq: int) -> None:
        """Deliver journaled events (delivered_seq, upto_seq] that never reached the inbox."""
        while self.state.delivered_seq < upto_seq:
            start = self.state.delivered_seq + 1
            chunk = await anyio.to_thread.run_sync(self._read_journal, start, min(upto_seq, start + _CATCH_UP_CHUNK - 1))
            if not chunk:
                self.state.delivered_seq = upto_seq  # not journaled (disk error): nothing to recover
                return
            await self._deliver(chunk[0][0], [event for _, event in chunk])

    def _read_journal(self, from_seq: int, to_seq: int) -> list[tuple[int, tuple]]:
        journal = self._recorder.journal
        start = journal.offset_of(from_seq) if journal is not None else None
        return list(iter_journal(self._recorder.run_dir, from_seq, to_seq, start=start))

    async def _flush(self, seq: int) -> None:
        await self._catch_up(seq)
        await self._call(self.sink.flush, inline=True)
        self.state.flushed_seq = max(self.state.flushed_seq, seq)
        self._notify()

    async def _call(self, fn: Callable[..., Any], *args: Any, inline: bool = False) -> Any:
        """Call a sink method in a pool thread; retry with back-off until it succeeds or is cancelled.

        `inline`: a non-blocking sink's `write` or `flush`, called on this thread unless the sink is
        still busy in a call abandoned at an earlier deadline (its lock is held). `open` and `close`
        always go to the pool: they may take long (the JSON sink writes its CSV at close), and the
        end-of-run deadline can only abandon a call that runs in another thread.
        """
        delay = self._retry.initial_s
        while True:
            try:
                if inline and not self._blocking and self._lock.acquire(blocking=False):
                    try:
                        result = fn(*args)
                    finally:
                        self._lock.release()
                else:
                    result = await anyio.to_thread.run_sync(self._locked, fn, args, abandon_on_cancel=True)
            except PermanentSinkError:
                raise
            except Exception as exc:  # a sink may raise anything; it must never kill the lane
                self._failed(fn, exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, self._retry.max_s)
            else:
                if self.state.failing:
                    self.state.failing = False
                    _logger.warning("tracking: sink %r recovered; catching up", self.sink.name)
                    self._notify()
                return result

    def _locked(self, fn: Callable[..., Any], args: tuple) -> Any:
        with self._lock:
            return fn(*args)

    def _failed(self, fn: Callable[..., Any], exc: BaseException, delay: float) -> None:
        state = self.state
        state.errors += 1
        state.last_error = f"{type(exc).__name__}: {exc}"
        if not state.failing:
            state.failing = True
            _logger.warning(
                "tracking: sink %r failed in %s (%s); retrying with back-off, other sinks go on",
                self.sink.name, getattr(fn, "__name__", fn), state.last_error,
            )
            self._notify()
