"""The delivery agent process: `main(["--fd", N, "--wake-fd", M, "--parent-pid", P])`.

Runs on the main thread of its own process, started by the training process's `AgentLink` in a new
session (through `tracking.core.spawn`, or by hand as ``python -m tracking.agent``), so that the
terminal's Ctrl-C and a SIGTERM to the training job's process group do not reach it: it ends
through its control channel (fd N), or when the training process (P) is gone, after it has
delivered what was journaled. Its log records and warnings go back over the channel while the
training process lives (which logs and warns them as its own), and to stderr after.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
import warnings
from typing import Sequence

import anyio

from .agent import Agent
from .logs import ChannelLogHandler, WarningForwarder

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the control channel's socket")
    parser.add_argument("--wake-fd", type=int, required=True, help="the read end of the wake pipe")
    parser.add_argument("--parent-pid", type=int, required=True, help="the training process")
    args = parser.parse_args(argv)
    # A Ctrl-C sent to this session by hand must not cut a delivery short either; SIGTERM (sent to
    # this pid on purpose) keeps its default: the next agent resumes from the committed cursors.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The agent allocates millions of short-lived containers (decoded events) and keeps few: at
    # the default gen-0 threshold (700) the collector ran every ~70 events and took about half of
    # the journal's decoding time (3.6 vs 6.1 µs an event measured on a 300,000-event journal).
    gc.set_threshold(50_000, 20, 100)
    # What is imported by now lives as long as the agent: the collections need not walk it (a
    # 300,000-event journal decoded 10 % faster with the heap of mlflow and torch imports frozen).
    gc.freeze()
    sock = socket.socket(fileno=args.fd)
    agent = Agent(sock, args.wake_fd, parent_pid=args.parent_pid)
    _forward_logs(agent)
    anyio.run(agent.serve)
    # Done: every run it served has ended. Exit now: a worker thread still blocked in the control
    # channel's recv, or in a call abandoned at a deadline, must not keep the process alive.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _forward_logs(agent: Agent) -> None:
    """Every log record (ours, a user sink's, a library's that propagates) and every warning go to
    the training process, or to stderr once it is gone. The levels come with `Configure`; until
    then our loggers send from INFO up."""
    logging.getLogger().addHandler(ChannelLogHandler(agent))
    logging.getLogger("tracking").setLevel(logging.INFO)
    # Every occurrence goes over (up to a cap): the training process's filters and registries
    # decide what is shown, as if the warning were raised there. The categories Python ignores by
    # default stay ignored here, unless PYTHONWARNINGS (which the agent inherits) says otherwise.
    if not sys.warnoptions:
        warnings.simplefilter("always")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
    warnings.showwarning = WarningForwarder(agent)


if __name__ == "__main__":
    sys.exit(main())
