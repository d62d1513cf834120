"""The delivery agent's loop: serves the journals of one tracker's runs to its sinks.

Runs in the agent, under an anyio event loop: on the main thread of `python -m tracking.agent`, or
on a thread of the training process where no process can be started (or for the sinks that can't
leave it). Calls into a sink that may block run in the loop's worker threads; the `write` and
`flush` of a sink that says `blocking = False` run on the loop's own thread (its `open` and `close`
always go to a worker thread, where the end-of-run deadline can leave them).

Per run (`RunService`), each sink has a task that moves its slot's cursor forward: from the fresh
events the loop decoded once for every sink that keeps up (`FreshEvents`), or, for a sink that fell
behind, from the journal in bounded chunks of its own. The agent learns that a journal grew from a
byte on its wake pipe and reads the file itself: events never travel over the control channel.

The agent ends through its control channel (`Shutdown`), or when the training process is gone
(the channel's end closes, or the parent pid's pidfd fires): then every run still open is
delivered to its end, its sinks are closed with the journal's end status (KILLED when the journal
has none), and the final meta.json is written.
"""
from __future__ import annotations

import enum
import logging
import os
import pickle
import socket
import sys
import threading
import time
import warnings
from collections import deque
from typing import Any, Callable

import anyio
import anyio.lowlevel

from ..channel import recv_msg, send_msg
from ..journal import JournalReader
from ..rundir import finish_meta
from ..sinks.base import RunContext, Sink
from .cursors import DeliveryStore
from .engine import Outcome, SinkSlot, SlotState
from .specs import SinkSpec
from .protocol import (
    AgentOptions, AgentWarning, Configure, Configured, Ended, EndRun, Flush, Flushed, LogRecord, OpenRun,
    Progress, Shutdown,
)

__all__ = ["Agent", "AgentState", "RunService", "FreshEvents", "SinkPool"]

_logger = logging.getLogger(__name__)

#: progress messages per run and second, at most (stats() reads the latest)
_PROGRESS_EVERY_S = 0.2
_PARENT_POLL_S = 0.5
#: occurrences of one warning (category, text, place) an agent forwards; the training process's
#: filters decide which it shows, as they would in one process ("default": the first)
_MAX_WARNINGS_FORWARDED = 100


class FreshEvents:
    """The latest journaled events, decoded once, for every sink that keeps up."""

    def __init__(self, max_events: int) -> None:
        self._max_events = max(int(max_events), 1)
        self._batches: deque[tuple[int, list[Any]]] = deque()
        self._count = 0

    def add(self, first: int, events: list[Any]) -> None:
        if not events:
            return
        self._batches.append((first, events))
        self._count += len(events)
        while self._count > self._max_events and len(self._batches) > 1:
            _, dropped = self._batches.popleft()
            self._count -= len(dropped)

    def take(self, seq: int) -> list[Any] | None:
        """The events of the batch holding `seq`, from `seq` on; None if it is not here."""
        for first, events in self._batches:
            if first <= seq < first + len(events):
                return events if seq == first else events[seq - first:]
        return None

    @property
    def first_seq(self) -> int | None:
        return self._batches[0][0] if self._batches else None

    @property
    def last_seq(self) -> int:
        if not self._batches:
            return 0
        first, events = self._batches[-1]
        return first + len(events) - 1


class RunService:
    """One run's delivery in the agent: a slot per sink, fed from fresh events or the journal."""

    def __init__(self, agent: Agent, run: RunContext) -> None:
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
        self.write_meta = message.background or self.agent.state is AgentState.ORPHANED
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
            if behind and self.agent.state is AgentState.ORPHANED:
                _logger.error("run %s: the catch-up deadline passed with sinks behind (%s); "
                              "replay them from the journal", self.run.run_id, behind)


class SinkPool:
    """The agent's sinks: an instance per run where a spec can build one (a sink finishing a run in
    the background must not be opened for the next), the one instance where it can't (a sink given
    as an instance, on a thread of the training process): the next run waits for it to be free."""

    def __init__(self, objects: dict[str, Sink]) -> None:
        self.names: list[str] = []
        self._specs: dict[str, SinkSpec] = {}
        self._objects = objects
        self._idle: dict[str, list[tuple[Sink, threading.Lock]]] = {}
        self._freed: dict[str, anyio.Event] = {}

    def configure(self, specs: tuple[SinkSpec, ...]) -> dict[str, str]:
        """Build each sink once (the first run's instance); returns the ones that failed, with why."""
        errors: dict[str, str] = {}
        for spec in specs:
            try:
                sink = self._objects[spec.name] if spec.how == "object" else spec.build()
            except Exception as exc:  # reported to the tracker, which says so at once
                errors[spec.name] = f"{type(exc).__name__}: {exc}"
                continue
            self.names.append(spec.name)
            self._specs[spec.name] = spec
            # Each instance has its own lock, for all its runs: a call abandoned at an end-of-run
            # deadline keeps running in its thread, and the next run's first call waits for it.
            self._idle[spec.name] = [(sink, threading.Lock())]
        return errors

    async def take(self, name: str) -> tuple[Sink, threading.Lock]:
        while not self._idle[name]:
            spec = self._specs[name]
            if spec.how != "object":
                sink = await anyio.to_thread.run_sync(spec.build)
                return sink, threading.Lock()
            freed = self._freed.setdefault(name, anyio.Event())
            await freed.wait()  # the one instance is still ending the previous run
        return self._idle[name].pop()

    def give_back(self, name: str, sink: Sink, lock: threading.Lock) -> None:
        self._idle[name].append((sink, lock))
        freed = self._freed.pop(name, None)
        if freed is not None:
            freed.set()


class AgentState(enum.Enum):
    """Where an agent is in its life."""

    SERVING = "serving"  #: runs come and go; the training process is there
    SHUTTING_DOWN = "shutting down"  #: told to stop: exits once the runs being ended are done
    ORPHANED = "orphaned"  #: the training process is gone: finishes every run from its journal, then exits


class Agent:
    """Builds a tracker's sinks once and serves each run it is told about."""

    def __init__(self, sock: Any, wake_fd: int, parent_pid: int | None = None,
                 objects: dict[str, Sink] | None = None, placement: str = "agent") -> None:
        self.sock = sock
        self.wake_fd = wake_fd
        self.parent_pid = parent_pid
        self.placement = placement
        self.options = AgentOptions()
        self.pool = SinkPool(objects or {})
        self.runs: dict[str, RunService] = {}
        self.state = AgentState.SERVING
        # Guards the channel's sending side: the loop answers, and log records come from any thread.
        self._send_lock = threading.Lock()
        self._channel_open = True
        self._warned: dict[tuple, int] = {}  # how often each warning was forwarded
        self._done: anyio.Event | None = None
        self._tg: Any = None

    # -- sending -------------------------------------------------------------------------------

    def forward_warning(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                        file: Any = None, line: str | None = None) -> None:
        """`warnings.showwarning` in an agent process: the training process warns it again, where
        its filters (and its once-per-place registries) decide; once it is gone, stderr."""
        if not self._channel_open:
            _show_warning(message, category, filename, lineno, file, line)
            return
        key = (category, str(message), filename, lineno)
        self._warned[key] = seen = self._warned.get(key, 0) + 1
        if seen > _MAX_WARNINGS_FORWARDED:
            return  # the same warning again and again (a library's, every batch): enough said
        self.send(AgentWarning.of(message, category, filename, lineno, _module_of(filename)))

    def send(self, message: Any, droppable: bool = False) -> None:
        """Send to the training process; a droppable message is skipped rather than waited for."""
        if not self._channel_open:
            return
        if droppable and not _writable(self.sock):
            return
        try:
            with self._send_lock:
                send_msg(self.sock, message)
        except OSError:
            self._channel_open = False

    # -- the loop ------------------------------------------------------------------------------

    async def serve(self) -> None:
        self._done = anyio.Event()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._read_control)
            tg.start_soon(self._read_wakes)
            if self.parent_pid is not None:
                tg.start_soon(self._watch_parent)
            await self._done.wait()
            tg.cancel_scope.cancel()

    async def _read_control(self) -> None:
        while True:
            try:
                message = await anyio.to_thread.run_sync(recv_msg, self.sock, abandon_on_cancel=True)
            except (EOFError, OSError, pickle.UnpicklingError):
                self._orphan()  # the training process is gone (or its channel is): finish alone
                return
            try:
                self._dispatch(message)
            except Exception:  # a bug must not take the agent, and every run it serves, down
                _logger.exception("could not handle %.100r", message)

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, Configure):
            self._configure(message)
        elif isinstance(message, OpenRun):
            self._open_run(message)
        elif isinstance(message, Flush):
            run = self.runs.get(message.run_id)
            if run is None:
                self.send(Flushed(message.token, message.run_id, False, {}))
            else:
                run.flush(message.token, message.seq)
        elif isinstance(message, EndRun):
            run = self.runs.get(message.run_id)
            if run is None:
                self.send(Ended(message.run_id, {}, False))
            else:
                run.end(message)
        elif isinstance(message, Shutdown):
            if self.state is AgentState.SERVING:
                self.state = AgentState.SHUTTING_DOWN
            self._check_done()
        else:
            _logger.error("unknown message %.100r", message)

    def _configure(self, message: Configure) -> None:
        self.options = message.options
        if self.placement == "agent":  # a process of its own: log what the training process would show
            for name, level in message.log_levels.items():
                logging.getLogger(name or None).setLevel(level)
        self.send(Configured(os.getpid(), self.pool.configure(message.sinks)))

    def _open_run(self, message: OpenRun) -> None:
        if message.run.run_id in self.runs:
            return  # served already (a link says everything again to a new agent): one service a run
        service = RunService(self, message.run)
        self.runs[message.run.run_id] = service
        self._tg.start_soon(self._serve_run, service)

    async def _serve_run(self, service: RunService) -> None:
        try:
            await service.serve()
        finally:
            self.runs.pop(service.run.run_id, None)
            self._check_done()

    async def _read_wakes(self) -> None:
        """Read the journals when the writer says they grew, at most every `delivery_interval_s`:
        the wake-ups of that interval are taken together (each round has a fixed cost: file
        reads, sink calls). Flush and end requests read the journal at once, without waiting."""
        while True:
            await anyio.wait_readable(self.wake_fd)
            try:
                if not os.read(self.wake_fd, 65536):
                    return  # every writer closed its end: the journals are read on their own now
            except BlockingIOError:
                continue
            except OSError:
                return
            for run in list(self.runs.values()):
                try:
                    run.journal_grew()
                except OSError as exc:  # the journal unreadable for now: the next round tries again
                    _logger.warning("cannot read the journal of run %s: %s", run.run.run_id, exc)
            await anyio.sleep(self.options.delivery_interval_s)

    async def _watch_parent(self) -> None:
        """When the training process is gone, end the control channel's reading after what it sent.

        The channel alone can't say so: a forked child of the training process (a DataLoader
        worker) may hold its end open. Shutting down our reading side lets `_read_control` take
        every message still buffered (a process that exits right after `end_run` has sent its
        `OpenRun` and `EndRun`, maybe before this agent finished importing), then see the end and
        orphan the agent: one way to become orphaned, after the last word of the training process.
        """
        try:
            pidfd = os.pidfd_open(self.parent_pid)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is not None:
            try:
                await anyio.wait_readable(pidfd)
            finally:
                os.close(pidfd)
        else:
            while os.getppid() == self.parent_pid:
                await anyio.sleep(_PARENT_POLL_S)
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:  # not connected any more: the reader has seen the end already, or will
            self._orphan()

    def _orphan(self) -> None:
        if self.state is AgentState.ORPHANED:
            return
        self.state = AgentState.ORPHANED
        self._channel_open = False
        for run in list(self.runs.values()):
            run.orphaned()
        self._check_done()

    def _check_done(self) -> None:
        if self.state is not AgentState.SERVING and not self.runs and self._done is not None:
            self._done.set()


def _module_of(filename: str) -> str | None:
    """The name of the imported module whose file is `filename` (what warning filters match)."""
    for name, module in list(sys.modules.items()):
        try:
            if getattr(module, "__file__", None) == filename:
                return name
        except Exception:  # a lazy module that raises on any attribute: not this one
            continue
    return None


def _writable(sock: Any) -> bool:
    import select

    try:
        return bool(select.select([], [sock], [], 0)[1])
    except (OSError, ValueError):
        return False


class ChannelLogHandler(logging.Handler):
    """Sends the agent's log records to the training process, which handles them as its own."""

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self._agent = agent

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(_in_emit, "active", False):
            return
        _in_emit.active = True
        try:
            exc_text = _EXC_FORMATTER.formatException(record.exc_info) if record.exc_info else None
            if self._agent._channel_open:
                self._agent.send(LogRecord.of(record, exc_text))
            else:
                message = record.getMessage() + (f"\n{exc_text}" if exc_text else "")
                sys.stderr.write(f"{record.levelname} {record.name}: {message}\n")
        except Exception:
            self.handleError(record)
        finally:
            _in_emit.active = False


_in_emit = threading.local()
_EXC_FORMATTER = logging.Formatter()
_show_warning = warnings.showwarning  # Python's own, for when the training process is gone
