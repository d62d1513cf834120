"""`RunService`: one run's delivery in the agent, a slot per sink, fed from fresh events or the journal.

Runs under the agent's anyio event loop (its loop thread; calls into a sink that may block go to
the loop's worker threads: see `tracking.agent.agent`). Each sink has a task that moves its slot's
cursor forward: from the fresh events the loop decoded once for every sink that keeps up
(`FreshEvents`), or, for a sink that fell behind, from the journal in bounded chunks of its own.
When the run ends (`EndRun`, or the training process is gone) every slot is delivered to the end
within the deadline, its sink closed with the run's status, and, where the agent is the one that
finishes the run, the final meta.json written.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol

import anyio
import anyio.lowlevel

from ..delivery.cursors import DeliveryStore
from ..delivery.engine import Outcome, SinkSlot, SlotState
from ..journal import JournalReader
from ..journal.rundir import finish_meta
from ..sinks.base import RunContext, Sink
from .fresh import FreshEvents
from .protocol import AgentOptions, Ended, EndRun, Flushed, Progress

from .sink_pool import SinkPool

__all__ = ["RunService", "Host"]

_logger = logging.getLogger(__name__)

#: progress messages per run and second, at most (stats() reads the latest)
_PROGRESS_EVERY_S = 0.2


class Host(Protocol):
    """What a run's service needs of the agent that hosts it (`tracking.agent.agent.Agent`)."""

    options: AgentOptions
    pool: SinkPool
    placement: str  #: where its sinks run, for stats(): "agent" or "thread"

    @property
    def orphaned(self) -> bool: ...

    def send(self, message: Any, droppable: bool = False) -> None: ...


class RunService:
    """One run's delivery in the agent: a slot per sink, fed from fresh events or the journal."""

    def __init__(self, agent: Host, run: RunContext) -> None:
        self.agent = agent
        self.run = run
        self.options = agent.options
        self.reader = JournalReader(run.run_dir)
        self.store = DeliveryStore(run.run_dir)
        self.fresh = FreshEvents(self.options.max_sink_backlog_events)
        self.known_seq = 0  #: the last seq known to be journaled
        self.ending: EndRun | None = None
        self.write_meta = False  #: this agent writes the run's final meta.json
        self.flushes: list[tuple[int, int]] = []  # (token, seq) not answered yet, tokens ascending
        self._flushed: dict[str, int] = {}  # sink -> the latest flush token it has committed for
        self.slots: list[SinkSlot] = []  # built by serve(), once the run has its sink instances
        self._taken: list[tuple[str, Sink, threading.Lock]] = []
        self._sinks_taken = False
        self._changed = anyio.Event()
        self._scope = anyio.CancelScope()
        self._last_progress = 0.0

    # -- the loop's side (messages, wake-ups) ------------------------------------------------------

    def journal_grew(self) -> None:
        """Index what the writer appended and, if a sink keeps up, decode it, once for every sink."""
        backlog = self.options.max_sink_backlog_events
        if any(not s.done and self.known_seq - s.delivered_seq < backlog for s in self.slots):
            for first, events in self.reader.tail():
                self.fresh.add(first, events)
            last = self.reader.indexed_seq  # what tail() decoded: a line written since waits
        else:
            last = self.reader.refresh()
        if last > self.known_seq:
            self.known_seq = last
            self._notify()

    def flush(self, token: int, seq: int) -> None:
        if seq > self.known_seq:
            self.journal_grew()
        self.flushes.append((token, seq))
        self._answer_flushes()
        self._notify()

    def end(self, message: EndRun) -> None:
        self.ending = message
        self.journal_grew()
        self.known_seq = max(self.known_seq, message.final_seq)
        self.write_meta = message.background or self.agent.orphaned
        timeout = self.options.catch_up_timeout_s if message.background else message.timeout_s
        self._scope.deadline = min(self._scope.deadline, anyio.current_time() + timeout)
        self._notify()

    def orphaned(self) -> None:
        """The training process is gone: finish the run from its journal, on our own deadline."""
        last = self.reader.refresh()
        if self.ending is None:
            status = self.reader.end_status or "KILLED"
            self.ending = EndRun(self.run.run_id, status, last, self.options.catch_up_timeout_s)
        self.known_seq = max(self.known_seq, last)
        self.write_meta = True
        self._scope.deadline = anyio.current_time() + self.options.catch_up_timeout_s
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- serving -----------------------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            with self._scope:
                await self._take_sinks()
                self.journal_grew()
                self._answer_flushes()
                async with anyio.create_task_group() as tg:
                    for slot in self.slots:
                        tg.start_soon(self._serve_slot, slot)
            self._finish(timed_out=self._scope.cancelled_caught)
        finally:
            for name, sink, lock in self._taken:
                self.agent.pool.give_back(name, sink, lock)

    async def _take_sinks(self) -> None:
        """This run's sink instances (a sink given as an instance waits for the previous run to be done)."""
        for name in self.agent.pool.names:
            sink, lock = await self.agent.pool.take(name)
            self._taken.append((name, sink, lock))
            self.slots.append(SinkSlot.claim(sink, self.run, self.store, retry=self.options.retry, lock=lock,
                                             placement=self.agent.placement))
        self._sinks_taken = True

    async def _serve_slot(self, slot: SinkSlot) -> None:
        try:
            while not slot.done:
                if not await self._step(slot):
                    await self._wait(slot)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # a bug must cost one sink, never the agent
            slot.state = SlotState.GAVE_UP
            slot.last_error = f"{type(exc).__name__}: {exc}"
            _logger.exception("delivery to sink %r failed; its events stay in the journal", slot.name)
        finally:
            self._answer_flushes()
            self._send_progress(force=True)

    async def _step(self, slot: SinkSlot) -> bool:
        """Do the next thing this sink needs; False if there is nothing to do until something changes."""
        now = time.monotonic()
        if not slot.ready(now):
            with anyio.move_on_after(slot.retry_at - now):
                await self._changed_or_never()
            return True
        if not slot.opened:  # a new slot, or one whose open failed: nothing else before it
            await self._call(slot, slot.open, in_thread=True)
            self._send_progress(force=True)  # the sink's facts (the MLflow run id) for get_run_id()
            return True
        if self._commit_due(slot, now):  # before delivering more: a sink that never catches up commits too
            asked = self._flush_asked(slot)
            if await self._call(slot, slot.commit) is Outcome.DELIVERED:
                if asked:
                    self._flushed[slot.name] = max(self._flushed.get(slot.name, 0), asked)
                self._answer_flushes()
                self._send_progress()
            return True
        if slot.delivered_seq < self.known_seq:
            await self._deliver(slot)
            return True
        if self.ending is not None and slot.delivered_seq >= self.ending.final_seq:
            await self._call(slot, slot.close, self.ending.status, in_thread=True)
            return True
        return False

    async def _deliver(self, slot: SinkSlot) -> None:
        seq = slot.delivered_seq + 1
        events = self.fresh.take(seq)
        if events is not None:
            await self._call(slot, slot.write, seq, events)
        else:  # behind what is in memory: a chunk of the journal, read (and written) in a worker thread
            await self._call(slot, slot.deliver_from, self.reader, self.known_seq, in_thread=True)
        self.store.publish(slot.name, slot.delivered_seq)

    def _commit_due(self, slot: SinkSlot, now: float) -> bool:
        if self._flush_asked(slot):
            return True  # every flush() reaches the sink's flush(), once the sink has its events
        if slot.committed_seq >= slot.delivered_seq:
            return False
        if self.ending is not None and slot.delivered_seq >= self.ending.final_seq:
            return False  # close() makes it durable
        return now - slot.last_commit >= self.options.commit_interval_s

    def _flush_asked(self, slot: SinkSlot) -> int:
        """The latest flush token this sink has its events for and has not committed for (0: none)."""
        done = self._flushed.get(slot.name, 0)
        return max((token for token, seq in self.flushes if token > done and seq <= slot.delivered_seq), default=0)

    async def _wait(self, slot: SinkSlot) -> None:
        timeout = None
        if slot.committed_seq < slot.delivered_seq:
            timeout = max(slot.last_commit + self.options.commit_interval_s - time.monotonic(), 0.0)
        with anyio.move_on_after(timeout):
            await self._changed_or_never()

    async def _changed_or_never(self) -> None:
        await self._changed.wait()

    async def _call(self, slot: SinkSlot, fn: Callable[..., Outcome], *args: Any, in_thread: bool = False) -> Outcome:
        """An engine call: in a worker thread for a sink that may block (or is still busy in a call
        abandoned at an earlier deadline), else here, on the loop's thread."""
        if in_thread or slot.blocking or slot.lock.locked():
            outcome = await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        else:
            outcome = fn(*args)
            await anyio.lowlevel.checkpoint()
        if not slot.healthy:  # a flush no longer waits for this sink: it may be answered now
            self._answer_flushes()
        return outcome

    # -- answers -----------------------------------------------------------------------------------

    def _answer_flushes(self) -> None:
        if not self.flushes or not self._sinks_taken:
            return  # nothing asked, or the sinks are not taken yet (nobody is past anything)
        waiting = [s for s in self.slots if s.healthy and not s.done]
        for token, seq in list(self.flushes):
            if all(self._flushed.get(s.name, 0) >= token for s in waiting):
                self.flushes.remove((token, seq))
                self.agent.send(Flushed(token, self.run.run_id, True, self.reports()))

    def reports(self) -> dict[str, dict[str, Any]]:
        last = max(self.known_seq, self.ending.final_seq if self.ending else 0)
        return {slot.name: slot.report(last) for slot in self.slots}

    def _send_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= _PROGRESS_EVERY_S:
            self._last_progress = now
            self.agent.send(Progress(self.run.run_id, self.reports()), droppable=True)

    def _finish(self, timed_out: bool) -> None:
        reports = self.reports()
        if self.write_meta and self.ending is not None:
            meta = dict(self.ending.meta)
            sinks = {**meta.pop("other_sinks", {}), **reports}
            if "tags" not in meta:
                meta["tags"] = self.reader.tags()
            try:
                finish_meta(self.run.run_dir, self.ending.status, self.ending.final_seq, sinks, timed_out, **meta)
            except OSError as exc:
                _logger.error("cannot write %s/meta.json: %s", self.run.run_dir, exc)
        self.store.release_all()
        self.agent.send(Ended(self.run.run_id, reports, timed_out))
        if timed_out:
            behind = {n: r["undelivered"] for n, r in reports.items() if r["undelivered"]}
            if behind and self.agent.orphaned:
                _logger.error("run %s: the catch-up deadline passed with sinks behind (%s); "
                              "replay them from the journal", self.run.run_id, behind)
