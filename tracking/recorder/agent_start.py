"""Starting a delivery agent: a process of its own, or a thread of the training process, and the way to it.

Runs on the thread that starts an agent: the tracker's caller (the first `start_run`) or the
link's I/O thread (a restart). A process is started in a new session (the terminal's Ctrl-C and a
SIGTERM to the job's process group don't reach it) through `tracking.core.spawn`, which says how
it finds this package whatever the user's working directory holds; it is not waited for:
`start_run` returns while it imports its sinks.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
from dataclasses import dataclass
from typing import Any, Callable

import anyio

from ..agent.agent import Agent
from ..core.spawn import SpawnError, start_process
from ..sinks.base import Sink
from .threads import TrackerThread

__all__ = ["Connection", "start_agent_process", "start_agent_thread", "SpawnError"]

_logger = logging.getLogger(__name__)


@dataclass
class Connection:
    """One agent and the two ways to it: its control channel (ours: non-blocking) and its wake pipe."""

    sock: socket.socket
    wake_fd: int
    pid: int
    proc: subprocess.Popen | None = None  #: a process agent
    thread: threading.Thread | None = None  #: a thread agent


def start_agent_process() -> Connection:
    """`python -m tracking.agent` in a new session; raises SpawnError if no process can be started."""
    ours, theirs = socket.socketpair()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    try:
        proc = start_process(
            "tracking.agent.__main__",
            ["--fd", str(theirs.fileno()), "--wake-fd", str(wake_read), "--parent-pid", str(os.getpid())],
            pass_fds=(theirs.fileno(), wake_read), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            close_fds=True, start_new_session=True,
        )
    except SpawnError:
        ours.close()
        os.close(wake_write)
        raise
    finally:
        theirs.close()
        os.close(wake_read)
    ours.setblocking(False)
    return Connection(ours, wake_write, proc.pid, proc=proc)


def start_agent_thread(objects: dict[str, Sink], stop: Callable[[], Any]) -> Connection:
    """The same agent loop on a daemon thread of this process; `stop`: what a thread-leak check's
    stop() on that thread calls first."""
    ours, theirs = socket.socketpair()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    os.set_blocking(wake_read, False)
    agent = Agent(theirs, wake_read, objects=objects, placement="thread")

    def run() -> None:
        try:
            anyio.run(agent.serve)
        except BaseException:
            _logger.exception("the delivery thread crashed; undelivered events stay in the journal")
        finally:
            theirs.close()
            os.close(wake_read)

    # A daemon: the atexit hook ends runs (and waits for background ones) first; a stuck sink
    # must not hold the interpreter past that.
    thread = TrackerThread(run, "tracking-agent")
    thread.stop_with(stop)
    thread.start()
    ours.setblocking(False)
    return Connection(ours, wake_write, os.getpid(), thread=thread)
