"""`AgentLink`: the training process's handle on one delivery agent, a process or a thread.

Lives in the training process. `start`, `open_run`, `flush`, `end_run` and `close` run on the
tracker's caller threads; `wake` runs on the writer thread (a byte on the wake pipe, never
blocking); the link's reader thread ("tracking-agent-link") receives the agent's answers and, when
the agent dies, starts a new one that resumes from the committed cursors.

The agent process is started with `python -m tracking.agent` in a new session (the terminal's
Ctrl-C and a SIGTERM to the job's process group don't reach it) and is not waited for: `start_run`
returns while it imports its sinks. Where no process can be started, the same agent loop runs on a
thread of this process, with one warning. Sinks that can't leave this process are served by a
second link of kind "thread".
"""
from __future__ import annotations

import enum
import itertools
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Sequence

import anyio

from ..channel import recv_msg, send_msg
from ..sinks.base import RunContext, Sink
from ..threads import TrackerThread
from .protocol import (
    AgentOptions, Configure, Configured, Ended, EndRun, Flush, Flushed, LogRecord, OpenRun, Progress, Shutdown,
)
from .service import Agent
from .specs import SinkSpec

__all__ = ["AgentLink", "LinkState", "Waiter", "PROCESS", "THREAD"]

_logger = logging.getLogger(__name__)

PROCESS = "process"
THREAD = "thread"
#: restarts of a process agent after which the link falls back to a thread (one warning)
_MAX_RESTARTS = 5
#: how long close() waits for an agent to take its Shutdown and exit
_CLOSE_TIMEOUT_S = 5.0
#: how long a message to the agent may wait for room in the channel before the agent is restarted
_SEND_TIMEOUT_S = 10


class LinkState(enum.Enum):
    """Where a link is in its life."""

    IDLE = "idle"  #: no agent started yet (the first start_run starts it)
    RUNNING = "running"  #: an agent serves; if it dies, a new one is started
    CLOSED = "closed"  #: Shutdown sent: the agent exits once the runs it is ending are done
    FORGOTTEN = "forgotten"  #: in a forked child: the agent is the parent's


class Waiter:
    """An answer the caller waits for (Flushed, Ended), set by the link's reader thread."""

    __slots__ = ("message", "answer", "_done")

    def __init__(self, message: Any) -> None:
        self.message = message  #: what was asked: sent again to a restarted agent
        self.answer: Any = None
        self._done = threading.Event()

    def set(self, answer: Any) -> None:
        self.answer = answer
        self._done.set()

    def wait(self, timeout_s: float | None) -> Any:
        """The answer, or None if `timeout_s` passed first."""
        self._done.wait(None if timeout_s is None else max(timeout_s, 0.0))
        return self.answer


class AgentLink:
    """One agent serving `specs`; restarted when it dies, for as long as the link is open."""

    def __init__(self, specs: Sequence[SinkSpec], options: AgentOptions, kind: str = PROCESS,
                 objects: dict[str, Sink] | None = None) -> None:
        if kind not in (PROCESS, THREAD):
            raise ValueError(f"agent kind must be {PROCESS!r} or {THREAD!r}, got {kind!r}")
        self.kind = kind
        self.specs = tuple(specs)
        self.options = options
        self.pid: int | None = None  #: the agent process's pid (this process's for a thread)
        self.config_errors: dict[str, str] = {}
        self.restarts = 0
        self._objects = objects or {}
        # Guards the channel's sending side and the state below: caller threads send requests,
        # the reader thread re-sends them to a restarted agent.
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._wake_fd: int | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._owner_close: weakref.WeakMethod | None = None
        self._generation = 0
        self._tokens = itertools.count(1)
        self._flushes: dict[int, Waiter] = {}
        self._ends: dict[str, Waiter] = {}
        self._runs: dict[str, RunContext] = {}  # open or ending: re-opened on a restarted agent
        self._progress: dict[str, dict[str, dict[str, Any]]] = {}
        self.state = LinkState.IDLE
        # Guards the wake pipe's descriptor: the writer thread writes to it (never waiting for this
        # lock), a restart closes and replaces it.
        self._wake_lock = threading.Lock()

    # -- lifecycle (caller's thread) ---------------------------------------------------------------

    def start(self) -> None:
        """Start the agent if it is not running; returns at once."""
        with self._lock:
            if self.state is LinkState.IDLE:
                self._spawn()

    def close(self, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Let the agent finish the runs it is ending alone, then exit; leaves no thread of the
        link running (the reader thread ends at once; a thread agent is waited for `timeout_s`)."""
        with self._lock:
            if self.state is LinkState.CLOSED or self.state is LinkState.FORGOTTEN:
                return
            self.state = LinkState.CLOSED
            self._send(Shutdown())
            if self._sock is not None:
                # Our reader sees the end of the channel now; the agent still reads the Shutdown and
                # exits once the runs it is ending are done (its answers are not needed any more).
                try:
                    self._sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
            threads = [t for t in (self._reader, self._thread) if t is not None]
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)

    def stop_with(self, owner_close: Any) -> None:
        """What a stop() on one of the link's threads calls first: its tracker's close(), held
        weakly (the link's threads must not keep a dropped tracker alive)."""
        self._owner_close = weakref.WeakMethod(owner_close)

    def _stop(self) -> None:
        """A thread-leak check stopped one of our threads: end the tracker's run and let the agent go."""
        owner_close = self._owner_close() if self._owner_close is not None else None
        if owner_close is not None:
            owner_close()
        self.close()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's agent is not ours; never talk to it, never restart it."""
        self.state = LinkState.FORGOTTEN
        self._sock = None
        self._wake_fd = None
        self._proc = None
        self._thread = None
        self._reader = None
        self._lock = threading.RLock()
        self._wake_lock = threading.Lock()

    # -- requests ----------------------------------------------------------------------------------

    def wake(self) -> None:
        """Tell the agent that a journal grew (the writer thread: never blocks, never raises).

        Skipped while a restart swaps the pipe (its lock is held then): the new agent reads the
        journal on its own when it starts, and a byte must never reach a descriptor number the
        restart closed and the system handed out again."""
        if not self._wake_lock.acquire(blocking=False):
            return
        try:
            if self._wake_fd is not None:
                os.write(self._wake_fd, b"j")
        except OSError:  # full (wake-ups are pending already), or the agent is gone (it restarts)
            pass
        finally:
            self._wake_lock.release()

    def open_run(self, run: RunContext) -> None:
        with self._lock:
            self._runs[run.run_id] = run
            self._progress.pop(run.run_id, None)
            self._send(OpenRun(run))

    def flush(self, run_id: str, seq: int) -> Waiter:
        with self._lock:
            waiter = Waiter(Flush(next(self._tokens), run_id, seq))
            self._flushes[waiter.message.token] = waiter
            self._send(waiter.message)
        return waiter

    def end_run(self, message: EndRun) -> Waiter:
        with self._lock:
            waiter = Waiter(message)
            self._ends[message.run_id] = waiter
            self._send(message)
        return waiter

    def forget_run(self, run_id: str) -> None:
        """The tracker stopped waiting for this run (its deadline passed)."""
        with self._lock:
            self._ends.pop(run_id, None)
            self._runs.pop(run_id, None)

    def progress(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The latest report of every sink of the run, as the agent last sent it."""
        return self._progress.get(run_id, {})

    # -- internals ---------------------------------------------------------------------------------

    def _send(self, message: Any) -> None:
        """Send now (the lock is held); if the agent is gone, its replacement gets it on start.

        An agent that does not take a message within `_SEND_TIMEOUT_S` (stopped, wedged) is killed:
        half a message would break the channel anyway, and a new agent resumes from the cursors.
        """
        if self._sock is None:
            return
        try:
            send_msg(self._sock, message)
        except OSError:  # the reader thread sees the agent gone and restarts it, re-sending what is open
            if self._proc is not None and self._proc.poll() is None:
                _logger.warning("tracking: the delivery agent (pid %s) does not answer; restarting it", self._proc.pid)
                self._proc.kill()

    def _spawn(self) -> None:
        self.state = LinkState.RUNNING
        self._generation += 1
        if self.kind == PROCESS:
            try:
                self._start_process()
            except OSError as exc:
                _logger.warning("tracking: cannot start the delivery agent process (%s); delivering from a "
                                "thread of this process instead", exc)
                self.kind = THREAD
        if self.kind == THREAD:
            self._start_thread()
        reader = TrackerThread(self._read_loop, "tracking-agent-link", args=(self._sock, self._generation))
        reader.stop_with(self._stop)
        self._reader = reader
        reader.start()
        self._send(Configure(self._portable_specs(), self.options, os.getpid()))
        for run in self._runs.values():
            self._send(OpenRun(run))
        for waiter in self._flushes.values():
            self._send(waiter.message)
        for waiter in self._ends.values():
            self._send(waiter.message)

    def _portable_specs(self) -> tuple[SinkSpec, ...]:
        """The specs as the channel carries them: an instance stays here, named in its place (a
        thread agent takes it from `objects`)."""
        if self.kind == THREAD:
            return tuple(spec if spec.portable else SinkSpec(spec.name, "object", None) for spec in self.specs)
        return tuple(spec for spec in self.specs if spec.portable)

    def _start_process(self) -> None:
        if not sys.executable:
            raise OSError("sys.executable is empty (an embedded interpreter)")
        ours, theirs = socket.socketpair()
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        env = dict(os.environ)
        # The agent imports what this process can: the package, and the modules of user sinks.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tracking.agent", "--fd", str(theirs.fileno()),
                 "--wake-fd", str(wake_read), "--parent-pid", str(os.getpid())],
                pass_fds=(theirs.fileno(), wake_read), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=env, close_fds=True, start_new_session=True,
            )
        except OSError:
            ours.close()
            os.close(wake_write)
            raise
        finally:
            theirs.close()
            os.close(wake_read)
        self._proc, self._thread, self.pid = proc, None, proc.pid
        self._use(ours, wake_write)

    def _start_thread(self) -> None:
        ours, theirs = socket.socketpair()
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        os.set_blocking(wake_read, False)
        agent = Agent(theirs, wake_read, objects=self._objects, placement="thread")

        def run() -> None:
            try:
                anyio.run(agent.serve)
            except BaseException:
                _logger.exception("tracking: the delivery thread crashed; undelivered events stay in the journal")
            finally:
                theirs.close()
                os.close(wake_read)

        # A daemon: the atexit hook ends runs (and waits for background ones) first; a stuck sink
        # must not hold the interpreter past that.
        thread = TrackerThread(run, "tracking-agent")
        thread.stop_with(self._stop)
        thread.start()
        self._proc, self._thread, self.pid = None, thread, os.getpid()
        self._use(ours, wake_write)

    def _use(self, sock: socket.socket, wake_fd: int) -> None:
        # Sends only (the reader thread's recv stays blocking): see _send.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", _SEND_TIMEOUT_S, 0))
        with self._wake_lock:
            self._sock, self._wake_fd = sock, wake_fd

    def _read_loop(self, sock: socket.socket, generation: int) -> None:
        """The reader thread of one agent: answers to waiters; a restart when the agent dies."""
        while True:
            try:
                message = recv_msg(sock)
            except Exception:  # closed, or a broken message: either way this agent is done
                break
            try:
                self._receive(message)
            except Exception:  # a bug must not leave the link without a reader
                _logger.exception("tracking: could not handle the delivery agent's %.100r", message)
        try:
            self._agent_gone(sock, generation)
        except Exception:
            _logger.exception("tracking: could not restart the delivery agent; undelivered events stay in the "
                              "journal for replay")
            self.state = LinkState.CLOSED

    def _receive(self, message: Any) -> None:
        if isinstance(message, Progress):
            self._progress[message.run_id] = message.sinks
        elif isinstance(message, Flushed):
            if message.sinks:
                self._progress[message.run_id] = message.sinks
            waiter = self._flushes.pop(message.token, None)
            if waiter is not None:
                waiter.set(message)
        elif isinstance(message, Ended):
            self._progress[message.run_id] = message.sinks
            self._runs.pop(message.run_id, None)
            waiter = self._ends.pop(message.run_id, None)
            if waiter is not None:
                waiter.set(message)
        elif isinstance(message, LogRecord):
            logging.getLogger(message.name).log(message.level, "%s", message.message)
        elif isinstance(message, Configured):
            self.pid = message.pid
            self.config_errors = dict(message.errors)
            for name, error in message.errors.items():
                _logger.error("tracking: the delivery agent could not build sink %r (%s); its events stay in "
                              "the journal", name, error)

    def _reap(self) -> int | None:
        """The exit code of the agent process that just closed its channel (None: still running)."""
        proc = self._proc
        if proc is None:
            return None
        try:
            return proc.wait(_CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None

    def _agent_gone(self, sock: socket.socket, generation: int) -> None:
        with self._lock:
            sock.close()
            if generation != self._generation:
                return
            with self._wake_lock:
                if self._sock is sock:
                    self._sock = None
                if self._wake_fd is not None:
                    os.close(self._wake_fd)
                    self._wake_fd = None
            if self.state is not LinkState.RUNNING:
                return  # closed (the agent exits after its Shutdown), or forgotten in a forked child
            code = self._reap()
            self.restarts += 1
            if self.restarts > 2 * _MAX_RESTARTS:
                _logger.error("tracking: the delivery agent keeps dying; no more restarts. Undelivered events "
                              "stay in the journal: replay them with python -m tracking replay")
                self.state = LinkState.CLOSED
                return
            if self.kind == PROCESS and self.restarts > _MAX_RESTARTS:
                _logger.warning("tracking: the delivery agent died %d times; delivering from a thread of this "
                                "process from now on", self.restarts - 1)
                self.kind = THREAD
            else:
                _logger.warning("tracking: the delivery agent (pid %s) exited (code %s); a new one takes over "
                                "from the committed cursors", self.pid, code)
            time.sleep(0.05 * min(self.restarts, 10))  # an agent that dies at once must not spin
            self._spawn()
