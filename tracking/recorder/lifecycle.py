"""Process-level hooks: end open runs at interpreter exit and on SIGTERM/SIGINT; go inert after fork.

`track()` runs on the caller's thread in `start_run()`. The hooks run where Python runs them: atexit
on the main thread at exit, signal handlers on the main thread between bytecodes, the fork hook in
the child right after `fork()`.

Each hook is installed once per process. Signal handlers are installed only from the main thread
(Python allows nothing else) and chain to whatever handler was there before, so after our flush the
signal does what it would have done: SIGINT raises KeyboardInterrupt, SIGTERM ends the process.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref
from typing import Any, Protocol

__all__ = ["track", "untrack", "track_links", "EXIT_TIMEOUT_S"]

_logger = logging.getLogger(__name__)

#: how long the atexit hook and the signal handlers wait for sinks before giving up
EXIT_TIMEOUT_S = 10.0


class _Endable(Protocol):
    def _end_from_hook(self, status: str, timeout_s: float) -> None: ...
    def _after_fork_in_child(self) -> None: ...
    def _close_links_at_exit(self) -> None: ...


_live: "weakref.WeakSet[Any]" = weakref.WeakSet()  # trackers with an open run
_with_agents: "weakref.WeakSet[Any]" = weakref.WeakSet()  # trackers that started delivery agents
_installed = False
_signals_installed = False
# Guards _installed/_signals_installed: two threads starting their first runs at once.
_install_lock = threading.Lock()
_previous_handlers: dict[int, Any] = {}
_uncaught: list[BaseException] = []


def track(tracker: _Endable) -> None:
    """Remember a tracker with an open run, installing the process hooks on first use."""
    _live.add(tracker)
    with _install_lock:
        _install_process_hooks()
        _install_signal_handlers()


def _install_process_hooks() -> None:
    """atexit, the fork hook and the excepthook, once per process (the install lock is held)."""
    global _installed
    if not _installed:
        atexit.register(_at_exit)
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _wrap_excepthook()
        _installed = True


def untrack(tracker: _Endable) -> None:
    _live.discard(tracker)


def track_links(tracker: _Endable) -> None:
    """Remember a tracker that has delivery agents: at exit they are let go, after a fork forgotten."""
    _with_agents.add(tracker)
    with _install_lock:
        _install_process_hooks()


def _end_all(status: str) -> None:
    for tracker in list(_live):
        try:
            tracker._end_from_hook(status, EXIT_TIMEOUT_S)
        except Exception:  # one tracker's failure must not stop the others from ending
            _logger.exception("could not end a run at exit")


def _at_exit() -> None:
    _end_all("FAILED" if _uncaught else "FINISHED")
    for tracker in list(_with_agents):
        try:
            tracker._close_links_at_exit()
        except Exception:
            _logger.exception("could not let a delivery agent go at exit")


def _wrap_excepthook() -> None:
    # An exception that ends the program reaches sys.excepthook before atexit runs: remember it so
    # the run left open is marked FAILED, not FINISHED.
    previous = sys.excepthook

    def hook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        _uncaught.append(exc)
        previous(exc_type, exc, tb)

    sys.excepthook = hook


def _install_signal_handlers() -> None:
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            _previous_handlers[signum] = signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # not the main interpreter, or a platform without it
            continue
    _signals_installed = True


def _on_signal(signum: int, frame: Any) -> None:
    _end_all("KILLED")
    previous = _previous_handlers.get(signum)
    if callable(previous):
        previous(signum, frame)
        return
    if signum == signal.SIGINT and previous != signal.SIG_IGN:
        raise KeyboardInterrupt
    if previous == signal.SIG_IGN:
        return
    # SIG_DFL for SIGTERM: die of the signal, as the process would have without us.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _after_fork_in_child() -> None:
    for tracker in {*_live, *_with_agents}:
        tracker._after_fork_in_child()
    _live.clear()
    _with_agents.clear()
