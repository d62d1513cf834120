"""Sinks for tests: real implementations of the contract that record, fail or stall on purpose.

They keep what they receive in the test's own process (`stay_in_process = True`), so async mode
serves them on a delivery thread of the training process, with the same engine as the agent
process: called from that thread's event loop or its pool threads (async mode), or from the
caller's thread (sync mode).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Mapping, Sequence

from tracking.sinks.base import RunContext

__all__ = ["RecordingSink", "FailingSink", "FailingOpenSink", "GateSink", "SlowSink", "TalkativeSink",
           "AgentFailingSink"]


class RecordingSink:
    """Keeps every call it receives, in order."""

    name = "recording"
    stay_in_process = True  # the test reads what it received

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.events: list[tuple] = []
        self.calls: list[str] = []
        self.statuses: list[str] = []
        self.runs: list[RunContext] = []
        self.threads: set[str] = set()

    def open(self, run: RunContext) -> Mapping[str, Any] | None:
        self.calls.append("open")
        self.runs.append(run)
        return {f"{self.name}_opened": True}

    def write(self, events: Sequence[tuple]) -> None:
        self.calls.append("write")
        self.threads.add(threading.current_thread().name)
        self.events.extend(events)

    def flush(self) -> None:
        self.calls.append("flush")

    def close(self, status: str) -> None:
        self.calls.append("close")
        self.statuses.append(status)


class FailingSink(RecordingSink):
    """Raises from write() while `failing` is set; records what it accepted once it stops failing."""

    def __init__(self, name: str = "failing") -> None:
        super().__init__(name)
        self.failing = True
        self.attempts = 0

    def write(self, events: Sequence[tuple]) -> None:
        self.attempts += 1
        if self.failing:
            raise OSError("simulated sink failure")
        super().write(events)


class FailingOpenSink(RecordingSink):
    """Raises from open() the first `failures` times: a store that is not ready yet (a database
    another process is still creating, a server starting)."""

    def __init__(self, name: str = "failing_open", failures: int = 2) -> None:
        super().__init__(name)
        self.failures = failures
        self.open_attempts = 0

    def open(self, run: RunContext) -> Mapping[str, Any] | None:
        self.open_attempts += 1
        if self.open_attempts <= self.failures:
            raise OSError("simulated store not ready")
        return super().open(run)

    def write(self, events: Sequence[tuple]) -> None:
        if "open" not in self.calls:
            raise AssertionError("write() before a successful open()")
        super().write(events)


class GateSink(RecordingSink):
    """Blocks in write() until `gate` is set: a stalled sink (a hung server, a full disk)."""

    def __init__(self, name: str = "gate") -> None:
        super().__init__(name)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, events: Sequence[tuple]) -> None:
        self.entered.set()
        self.gate.wait(60)
        super().write(events)


class SlowSink(RecordingSink):
    """Takes `per_event_s` an event in write(): a sink slower than the loop that feeds it."""

    def __init__(self, name: str = "slow", per_event_s: float = 5e-4) -> None:
        super().__init__(name)
        self.per_event_s = per_event_s

    def write(self, events: Sequence[tuple]) -> None:
        time.sleep(self.per_event_s * len(events))
        super().write(events)


class TalkativeSink:
    """Built in the agent process (named by class): warns once per run and logs at two levels there,
    under a logger of its own (a user's sink logs under its module's name, not ours)."""

    name = "talkative"

    def __init__(self) -> None:
        self.events = 0

    def open(self, run: RunContext) -> None:
        import logging
        import warnings

        warnings.warn("talkative sink opened", UserWarning)
        logging.getLogger("talkative_sink").debug("opened for %d events so far", self.events)

    def write(self, events: Sequence[tuple]) -> None:
        self.events += len(events)

    def flush(self) -> None:
        pass

    def close(self, status: str) -> None:
        import logging

        logging.getLogger("talkative_sink").info("closed after %d events", self.events)
        self.events = 0


class AgentFailingSink(FailingSink):
    """FailingSink built in the agent process (named by class): its failures are the agent's to report."""

    stay_in_process = False
