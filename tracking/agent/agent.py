"""`Agent`: the delivery agent's loop, which serves the journals of one tracker's runs to its sinks.

Runs in the agent, under an anyio event loop: on the main thread of `python -m tracking.agent`, or
on a thread of the training process where no process can be started (or for the sinks that can't
leave it). Calls into a sink that may block run in the loop's worker threads; the `write` and
`flush` of a sink that says `blocking = False` run on the loop's own thread (its `open` and `close`
always go to a worker thread, where the end-of-run deadline can leave them).

Each run is served by a `RunService` (`tracking.agent.run_service`); the sinks come from the
`SinkPool`. The agent learns that a journal grew from a byte on its wake pipe and reads the file
itself: events never travel over the control channel.

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
import threading
from typing import Any

import anyio

from ..core.channel import recv_msg, send_msg
from ..sinks.base import Sink
from .protocol import AgentOptions, Configure, Configured, Ended, EndRun, Flush, Flushed, OpenRun, Shutdown
from .run_service import RunService
from .sink_pool import SinkPool

__all__ = ["Agent", "AgentState"]

_logger = logging.getLogger(__name__)

_PARENT_POLL_S = 0.5


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
        self.channel_open = True
        self._done: anyio.Event | None = None
        self._tg: Any = None

    @property
    def orphaned(self) -> bool:
        """The training process is gone: runs are finished from their journals, alone."""
        return self.state is AgentState.ORPHANED

    # -- sending -------------------------------------------------------------------------------

    def send(self, message: Any, droppable: bool = False) -> None:
        """Send to the training process; a droppable message is skipped rather than waited for."""
        if not self.channel_open:
            return
        if droppable and not _writable(self.sock):
            return
        try:
            with self._send_lock:
                send_msg(self.sock, message)
        except OSError:
            self.channel_open = False

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
        self.channel_open = False
        for run in list(self.runs.values()):
            run.orphaned()
        self._check_done()

    def _check_done(self) -> None:
        if self.state is not AgentState.SERVING and not self.runs and self._done is not None:
            self._done.set()


def _writable(sock: Any) -> bool:
    import select

    try:
        return bool(select.select([], [sock], [], 0)[1])
    except (OSError, ValueError):
        return False
