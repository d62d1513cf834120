"""When a delivery agent died: whether to start another, of which kind, after how long.

Runs on the link's I/O thread, once per death of its agent (`tracking.recorder.link`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["RestartPolicy", "Restart", "PROCESS", "THREAD"]

_logger = logging.getLogger(__name__)

PROCESS = "process"
THREAD = "thread"
#: restarts of a process agent after which delivery moves to a thread (one warning)
MAX_PROCESS_RESTARTS = 5
#: the back-off before restart number n is n times this (at most 10 times)
BACKOFF_S = 0.05


@dataclass(frozen=True)
class Restart:
    """Start an agent of `kind` after `delay_s`."""

    kind: str
    delay_s: float


class RestartPolicy:
    """By count: a process agent is restarted `MAX_PROCESS_RESTARTS` times, then a thread takes
    over; a thread is restarted as often again, then delivery stops (the journal keeps the rest)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.restarts = 0

    def after_death(self, pid: int | None, exit_code: int | None) -> Restart | None:
        """What to do now that the agent `pid` is gone; None: no more agents (said once, loudly)."""
        self.restarts += 1
        if self.restarts > 2 * MAX_PROCESS_RESTARTS:
            _logger.error("the delivery agent keeps dying; no more restarts. Undelivered events stay in the "
                          "journal: replay them with python -m tracking replay")
            return None
        if self.kind == PROCESS and self.restarts > MAX_PROCESS_RESTARTS:
            _logger.warning("the delivery agent died %d times; delivering from a thread of this process from now on",
                            self.restarts - 1)
            self.kind = THREAD
        else:
            _logger.warning("the delivery agent (pid %s) exited (code %s); a new one takes over from the committed "
                            "cursors", pid, exit_code)
        # An agent that dies at once must not spin.
        return Restart(self.kind, BACKOFF_S * min(self.restarts, 10))

    def cannot_start(self, error: BaseException) -> None:
        """No process could be started: a thread takes over (said once)."""
        _logger.warning("cannot start the delivery agent process (%s); delivering from a thread of this process "
                        "instead", error)
        self.kind = THREAD
