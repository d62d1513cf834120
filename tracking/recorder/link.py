"""`AgentLink`: the training process's handle on one delivery agent, a process or a thread.

Lives in the training process. Requests (`open_run`, `flush`, `end_run`, `close`) come from the
tracker's caller threads and never wait: each is noted (so that a restarted agent gets it again)
and queued for the link's I/O thread ("tracking-agent-link"), which alone sends and receives on
the agent's control channel, hands the answers to their `Waiter`s, and, when the agent dies,
starts a new one that resumes from the committed cursors. `wake` runs on the writer thread (a
byte on the wake pipe, never blocking).

No lock is held while anything waits: the link's lock guards its bookkeeping; room in the channel
is waited for by the I/O thread, which also reaps a dead agent, backs off and starts the next one.
So a caller's deadline (`flush`, `end_run`) holds while the agent is dead, restarting or hung.

The agent process is started in a new session (the terminal's Ctrl-C and a SIGTERM to the job's
process group don't reach it; `tracking.core.spawn` says how it finds this package) and is not waited
for: `start_run` returns while it imports its sinks. Where no process can be started, the same
agent loop runs on a thread of this process, with one warning. Sinks that can't leave this
process are served by a second link of kind "thread".
"""
from __future__ import annotations

import enum
import itertools
import logging
import os
import selectors
import socket
import threading
import time
import weakref
from typing import Any, Sequence

from ..agent.protocol import (
    AgentOptions, AgentWarning, Configure, Configured, Ended, EndRun, Flush, Flushed, LogRecord, OpenRun,
    Progress, Shutdown,
)
from ..core.channel import FrameReader, frame
from ..core.spawn import SpawnError, reap
from ..delivery.specs import SinkSpec
from ..sinks.base import RunContext, Sink
from .agent_start import Connection, start_agent_process, start_agent_thread
from .restarts import PROCESS, THREAD, RestartPolicy
from .threads import TrackerThread

__all__ = ["AgentLink", "LinkState", "Waiter", "PROCESS", "THREAD"]

_logger = logging.getLogger(__name__)

#: how long close() waits for the link's threads; how long a dead agent's process is waited for
#: before it is terminated (and waited for again), then killed (and again)
_CLOSE_TIMEOUT_S = 5.0
#: how long an agent may leave a message unread before it is taken for hung and killed
_SEND_TIMEOUT_S = 10.0
_RECV_BYTES = 1 << 20
_END = object()


class LinkState(enum.Enum):
    """Where a link is in its life."""

    IDLE = "idle"  #: no agent started yet (the first start_run starts it)
    RUNNING = "running"  #: an agent serves; if it dies, a new one is started
    CLOSED = "closed"  #: Shutdown queued: the agent exits once the runs it is ending are done
    FORGOTTEN = "forgotten"  #: in a forked child: the agent is the parent's


class Waiter:
    """An answer the caller waits for (Flushed, Ended), set by the link's I/O thread."""

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
    """One agent serving `specs`; restarted when it dies, for as long as the link has runs to serve."""

    def __init__(self, specs: Sequence[SinkSpec], options: AgentOptions, kind: str = PROCESS,
                 objects: dict[str, Sink] | None = None) -> None:
        if kind not in (PROCESS, THREAD):
            raise ValueError(f"agent kind must be {PROCESS!r} or {THREAD!r}, got {kind!r}")
        self._policy = RestartPolicy(kind)
        self.specs = tuple(specs)
        self.options = options
        self.pid: int | None = None  #: the agent process's pid (this process's for a thread)
        self.config_errors: dict[str, str] = {}
        self.state = LinkState.IDLE
        self._objects = objects or {}
        # Guards the bookkeeping below (state, outbox, what a restarted agent must be told) between
        # the caller threads and the I/O thread. Never held while waiting for anything.
        self._lock = threading.Lock()
        self._outbox = bytearray()  # frames the current agent has not been sent yet
        self._tokens = itertools.count(1)
        self._flushes: dict[int, Waiter] = {}
        self._ends: dict[str, Waiter] = {}
        self._runs: dict[str, RunContext] = {}  # open or ending: re-opened on a restarted agent
        self._progress: dict[str, dict[str, dict[str, Any]]] = {}
        self._conn: Connection | None = None
        self._io: TrackerThread | None = None
        self._owner_close: weakref.WeakMethod | None = None
        self._closing = threading.Event()  # cuts a restart's back-off short
        self._poke_r, self._poke_w = -1, -1  # the callers' way to wake the I/O thread
        self._warning_registries: dict[str, dict[Any, Any]] = {}  # per file, as each module has its own
        # Guards the wake pipe's descriptor: the writer thread writes to it (never waiting for this
        # lock), a restart closes and replaces it.
        self._wake_lock = threading.Lock()

    @property
    def kind(self) -> str:
        """Where the agent runs now: PROCESS or THREAD (where no process could be started)."""
        return self._policy.kind

    @property
    def restarts(self) -> int:
        """How often the agent died and was started again."""
        return self._policy.restarts

    # -- lifecycle (caller's thread) ---------------------------------------------------------------

    def start(self) -> None:
        """Start the agent if it is not running; returns once it is spawned, not once it is ready."""
        with self._lock:
            if self.state is not LinkState.IDLE:
                return
            self.state = LinkState.RUNNING
            self._poke_r, self._poke_w = os.pipe()
            for fd in (self._poke_r, self._poke_w):
                os.set_blocking(fd, False)
        self._install(self._spawn())
        io = TrackerThread(self._serve, "tracking-agent-link")
        io.stop_with(self._stop)
        self._io = io
        io.start()

    def close(self, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Let the agent finish the runs it is ending alone, then exit; leaves no thread of the
        link running (the I/O thread ends once Shutdown is sent), waiting at most `timeout_s` in all."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self.state is not LinkState.RUNNING:
                if self.state is LinkState.IDLE:
                    self.state = LinkState.CLOSED
                return
            self.state = LinkState.CLOSED
            self._outbox += frame(Shutdown())
            self._poke()
        self._closing.set()
        conn = self._conn
        for thread in (self._io, conn.thread if conn is not None else None):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.0))

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
        """In a forked child: the parent's agent is not ours; never talk to it, never restart it.

        Our copies of the channel and the pipes are closed, so that the agent sees its channel end
        when the parent's does, whatever this child does."""
        self.state = LinkState.FORGOTTEN
        conn, self._conn, self._io = self._conn, None, None
        fds = [self._poke_r, self._poke_w]
        if conn is not None:
            fds.append(conn.sock.detach())
            fds.append(conn.wake_fd)
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._poke_r = self._poke_w = -1
        self._lock = threading.Lock()
        self._wake_lock = threading.Lock()

    # -- requests (caller's threads; none of them waits) -------------------------------------------

    def wake(self) -> None:
        """Tell the agent that a journal grew (the writer thread: never blocks, never raises).

        Skipped while a restart swaps the pipe (its lock is held then): the new agent reads the
        journal on its own when it starts, and a byte must never reach a descriptor number the
        restart closed and the system handed out again."""
        if not self._wake_lock.acquire(blocking=False):
            return
        try:
            conn = self._conn
            if conn is not None and conn.wake_fd >= 0:
                os.write(conn.wake_fd, b"j")
        except OSError:  # full (wake-ups are pending already), or the agent is gone (it restarts)
            pass
        finally:
            self._wake_lock.release()

    def open_run(self, run: RunContext) -> None:
        with self._lock:
            self._runs[run.run_id] = run
            self._progress.pop(run.run_id, None)
            self._queue(OpenRun(run))

    def flush(self, run_id: str, seq: int) -> Waiter:
        waiter = Waiter(Flush(next(self._tokens), run_id, seq))
        with self._lock:
            self._flushes[waiter.message.token] = waiter
            self._queue(waiter.message)
        return waiter

    def end_run(self, message: EndRun) -> Waiter:
        waiter = Waiter(message)
        with self._lock:
            self._ends[message.run_id] = waiter
            self._queue(message)
        return waiter

    def forget_flush(self, waiter: Waiter) -> None:
        """The caller stopped waiting for this flush (its deadline passed): no agent is asked again."""
        with self._lock:
            self._flushes.pop(waiter.message.token, None)

    def forget_run(self, run_id: str) -> None:
        """The tracker stopped waiting for this run (its deadline passed)."""
        with self._lock:
            self._ends.pop(run_id, None)
            self._runs.pop(run_id, None)

    def progress(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The latest report of every sink of the run, as the agent last sent it."""
        return self._progress.get(run_id, {})

    def _queue(self, message: Any) -> None:
        """Queue a message for the current agent (the lock is held); the I/O thread sends it."""
        if self.state is LinkState.RUNNING:
            self._outbox += frame(message)
            self._poke()

    def _poke(self) -> None:
        """Wake the I/O thread (the lock is held: the I/O thread closes the pipe under it)."""
        if self._poke_w < 0:
            return
        try:
            os.write(self._poke_w, b"!")
        except OSError:  # full: the I/O thread has wake-ups to read already
            pass

    # -- the I/O thread ----------------------------------------------------------------------------

    def _serve(self) -> None:
        """The I/O thread: serve each agent until its channel ends, then start the next; at the
        end, close what the link holds (the agent, told to shut down, goes on alone)."""
        try:
            while True:
                conn = self._conn
                if conn is None or self._pump(conn) or not self._restart(conn):
                    return
        except Exception:  # a bug must not end the link without a word
            _logger.exception("the delivery agent's link failed; undelivered events stay in the journal "
                              "for python -m tracking replay")
            with self._lock:
                self.state = LinkState.CLOSED
        finally:
            self._release()

    def _release(self) -> None:
        """Close the poke pipe, the wake pipe and our end of the channel (the I/O thread, at its end)."""
        with self._lock:
            fds = [fd for fd in (self._poke_r, self._poke_w) if fd >= 0]
            self._poke_r = self._poke_w = -1
        conn = self._conn
        if conn is not None:
            with self._wake_lock:
                if conn.wake_fd >= 0:
                    fds.append(conn.wake_fd)
                    conn.wake_fd = -1
            conn.sock.close()
        for fd in fds:
            os.close(fd)

    def _pump(self, conn: Connection) -> bool:
        """Send what is queued and hand over what arrives, until the link is closed and Shutdown is
        sent (True) or the agent's channel ends (False)."""
        reader = FrameReader()
        with selectors.DefaultSelector() as selector:
            selector.register(self._poke_r, selectors.EVENT_READ)
            selector.register(conn.sock, selectors.EVENT_READ)
            stalled_since: float | None = None  # since when queued bytes found no room
            while True:
                with self._lock:
                    pending = bool(self._outbox)
                    if not pending and self.state is not LinkState.RUNNING:
                        break
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending else 0)
                selector.modify(conn.sock, events)
                timeout = None
                if pending:
                    stalled_since = stalled_since or time.monotonic()
                    timeout = max(stalled_since + _SEND_TIMEOUT_S - time.monotonic(), 0.0)
                ready = selector.select(timeout)
                if not ready and pending:
                    self._hung(conn)
                    stalled_since = None
                for key, mask in ready:
                    if key.fd == self._poke_r:
                        _drain(self._poke_r)
                        continue
                    if mask & selectors.EVENT_READ and not self._read(conn, reader):
                        return False
                    if mask & selectors.EVENT_WRITE and self._write(conn):
                        stalled_since = None
        # Closed and Shutdown sent: stop reading, so that the agent's answers fail at once rather
        # than fill the channel; it goes on with the runs it is ending, alone.
        try:
            conn.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        return True

    def _read(self, conn: Connection, reader: FrameReader) -> bool:
        """Take what the agent sent; False once its channel ended (or broke)."""
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        messages = reader.feed(data)
        while True:
            try:
                message = next(messages, _END)
            except Exception:  # a broken message: this channel can't be trusted any more
                _logger.exception("the delivery agent (pid %s) sent a message that can't be read; restarting it",
                                  conn.pid)
                if conn.proc is not None:
                    conn.proc.kill()
                return False
            if message is _END:
                return True
            try:
                self._receive(message)
            except Exception:  # a bug must not leave the link without its reader
                _logger.exception("could not handle the delivery agent's %.100r", message)

    def _write(self, conn: Connection) -> bool:
        """Send as much of the outbox as the channel takes now; True if any of it went."""
        with self._lock:  # a non-blocking send: the lock is not held across a wait
            try:
                sent = conn.sock.send(self._outbox)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:  # the agent is gone: its channel's end is read next, and it restarts
                self._outbox.clear()
                return False
            del self._outbox[:sent]
        return sent > 0

    def _hung(self, conn: Connection) -> None:
        """The agent took nothing for `_SEND_TIMEOUT_S`: a process is killed (a new one resumes from
        the cursors); a thread can't be, and is waited for."""
        if conn.proc is not None and conn.proc.poll() is None:
            _logger.warning("the delivery agent (pid %s) took no message for %.0f s; restarting it",
                            conn.pid, _SEND_TIMEOUT_S)
            conn.proc.kill()

    def _receive(self, message: Any) -> None:
        if isinstance(message, Progress):
            self._progress[message.run_id] = message.sinks
        elif isinstance(message, Flushed):
            if message.sinks:
                self._progress[message.run_id] = message.sinks
            with self._lock:
                waiter = self._flushes.pop(message.token, None)
            if waiter is not None:
                waiter.set(message)
        elif isinstance(message, Ended):
            self._progress[message.run_id] = message.sinks
            with self._lock:
                self._runs.pop(message.run_id, None)
                waiter = self._ends.pop(message.run_id, None)
            if waiter is not None:
                waiter.set(message)
        elif isinstance(message, LogRecord):
            message.emit()
        elif isinstance(message, AgentWarning):
            message.warn(self._warning_registries.setdefault(message.filename, {}))
        elif isinstance(message, Configured):
            self.pid = message.pid
            self.config_errors = dict(message.errors)
            for name, error in message.errors.items():
                _logger.error("the delivery agent could not build sink %r (%s); its events stay in the journal",
                              name, error)

    # -- starting and restarting agents (the I/O thread, but for the first) ------------------------

    def _restart(self, conn: Connection) -> bool:
        """The agent's channel ended: start the next agent if there is still work for one."""
        with self._wake_lock:
            os.close(conn.wake_fd)
            conn.wake_fd = -1
        conn.sock.close()
        code = reap(conn.proc, _CLOSE_TIMEOUT_S) if conn.proc is not None else None
        with self._lock:
            self._outbox.clear()  # rebuilt for the next agent from what is still open (_install)
            # After close(), only runs still being ended need an agent (a background end).
            if self.state is LinkState.FORGOTTEN or (self.state is LinkState.CLOSED and not self._ends):
                return False
        restart = self._policy.after_death(conn.pid, code)
        if restart is None:
            with self._lock:
                self.state = LinkState.CLOSED
            return False
        self._closing.wait(restart.delay_s)  # close() cuts the back-off short
        self._install(self._spawn())
        return True

    def _install(self, conn: Connection) -> None:
        """Make `conn` the current agent and queue what it must be told, ahead of anything else."""
        with self._wake_lock:
            self._conn = conn
        self.pid = conn.pid
        with self._lock:
            levels = {name: logging.getLogger(name or None).getEffectiveLevel() for name in ("", "tracking")}
            messages: list[Any] = [Configure(self._portable_specs(), self.options, os.getpid(), levels)]
            messages += [OpenRun(run) for run in self._runs.values()]
            messages += [waiter.message for waiter in self._flushes.values()]
            messages += [waiter.message for waiter in self._ends.values()]
            if self.state is LinkState.CLOSED:
                messages.append(Shutdown())
            # All there is to say to a new agent: anything queued meanwhile is in the above too.
            self._outbox[:] = b"".join(frame(m) for m in messages)
            self._poke()

    def _spawn(self) -> Connection:
        if self._policy.kind == PROCESS:
            try:
                return start_agent_process()
            except SpawnError as exc:
                self._policy.cannot_start(exc)
        return start_agent_thread(self._objects, self._stop)

    def _portable_specs(self) -> tuple[SinkSpec, ...]:
        """The specs as the channel carries them: an instance stays here, named in its place (a
        thread agent takes it from `objects`)."""
        if self.kind == THREAD:
            return tuple(spec if spec.portable else SinkSpec(spec.name, "object", None) for spec in self.specs)
        return tuple(spec for spec in self.specs if spec.portable)



def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:  # empty (BlockingIOError) or closed
        pass
