"""The MLflow helper process: answers the sink's calls with a `store._Store` until told to stop.

Runs in the helper process only, on its main thread: a fresh interpreter that
`backends._HelperBackend` starts (`tracking.core.spawn`), which calls `main` with its end of a socket
pair (see `backends` for why MLflow runs there). The training process imports this module
(to name it) but never runs it.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys

from ...core.channel import recv_msg, send_msg
from .store import _describe_error, _Store

# The entry point `backends._HelperBackend` starts; nothing else calls it.
__all__ = ["main"]

_logger = logging.getLogger(__name__)

#: how much lower the helper process's scheduling priority is than the training process's
_HELPER_NICENESS = 10


def _lower_priority() -> None:
    """Put the helper below the training process in the scheduler's eyes.

    On a machine with few cores a busy store (sqlite ingestion takes ~110 µs of CPU a metric point)
    must not take the CPU from the training loop or from the thread that holds its GIL: it catches
    up whenever the trainer leaves a core idle. Nice 10 (a CFS weight of 110 against 1024), not
    lower and not SCHED_IDLE (weight 3): when data-loader workers keep every core busy, the helper
    must still ingest enough not to leave the whole run for `end_run`'s deadline. Measured on 2
    cores, SCHED_IDLE did not make the loop measurably faster (1.09-1.14x vs 1.17x).
    """
    try:
        os.nice(_HELPER_NICENESS)
    except OSError:
        pass


def main(argv: list[str]) -> None:
    """`argv`: the file descriptor of the helper's end of the socket pair."""
    _serve(int(argv[0]))


def _serve(fd: int) -> None:
    """The helper process: answer the sink's calls until it says stop or goes away."""
    # Ctrl-C reaches the whole process group; the parent decides when the helper stops, so that
    # the run's last batches and its status still reach MLflow after a KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _lower_priority()
    sock = socket.socket(fileno=fd)
    try:
        config = recv_msg(sock)
        store = _Store(config["uri"], config["kind"], config["artifact_location"], config["display_uri"])
        reply: tuple = ("ok", os.getpid())
    except BaseException as exc:
        reply = ("err", *_describe_error(exc))
    try:
        send_msg(sock, reply)
    except OSError:
        return  # the sink gave up waiting, or its process died (a killed agent): nobody to answer
    if reply[0] == "err":
        return
    while True:
        try:
            message = recv_msg(sock)
        except (EOFError, OSError):
            return  # the sink (or its whole process) is gone
        if message is None:
            # Everything MLflow was asked has been answered (and committed); skip the interpreter's
            # teardown, which takes about a second with MLflow loaded and would hold up close().
            sock.close()
            sys.stderr.flush()
            os._exit(0)
        op, args = message
        try:
            reply = ("ok", store.call(op, args))
        except Exception as exc:
            reply = ("err", *_describe_error(exc))
        try:
            send_msg(sock, reply)
        except OSError:
            return
