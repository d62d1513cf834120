"""The threads the tracker starts in the training process, as thread-leak checks expect them.

Every one is a daemon with a `stop()`: Lightning's test fixtures (and others modelled on them) call
`stop()` on a daemon thread a test left behind and then require it to be gone. Ours ends what the
thread serves (its tracker's `close()`: the run is ended as at interpreter exit, the agents let go)
and joins it, within a deadline. Runs on whichever thread calls `stop()`.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["TrackerThread"]

#: how long stop() waits for the thread once what it serves is ended
_JOIN_TIMEOUT_S = 10.0


class TrackerThread(threading.Thread):
    """A daemon thread of ours; `stop()` ends its owner's work and joins it."""

    def __init__(self, target: Callable[..., Any], name: str, args: tuple = ()) -> None:
        super().__init__(target=target, name=name, args=args, daemon=True)
        self._stop_owner: Callable[[], Any] | None = None

    def stop_with(self, stop: Callable[[], Any]) -> None:
        """What `stop()` calls first. The thread holds it strongly: the writer thread keeps its
        tracker alive while the run is open, so the exit hook still finds it (a link, whose threads
        outlive its runs, hands over a method of its own that holds the tracker weakly)."""
        self._stop_owner = stop

    def stop(self) -> None:
        """End what this thread serves, then wait for it (at most `_JOIN_TIMEOUT_S`)."""
        if self._stop_owner is not None:
            self._stop_owner()
        if self.ident is not None and self is not threading.current_thread():
            self.join(_JOIN_TIMEOUT_S)
