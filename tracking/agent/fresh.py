"""`FreshEvents`: the latest journaled events, decoded once, for every sink of a run that keeps up.

Runs on the agent's event loop thread (the run's service adds and takes; nothing else touches it).
A sink further behind than these reads the journal on its own, in bounded chunks.
"""
from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["FreshEvents"]


class FreshEvents:
    """The latest journaled events, decoded once, for every sink that keeps up."""

    def __init__(self, max_events: int) -> None:
        self._max_events = max(int(max_events), 1)
        self._batches: deque[tuple[int, list[Any]]] = deque()
        self._count = 0

    def add(self, first: int, events: list[Any]) -> None:
        if not events:
            return
        self._batches.append((first, events))
        self._count += len(events)
        while self._count > self._max_events and len(self._batches) > 1:
            _, dropped = self._batches.popleft()
            self._count -= len(dropped)

    def take(self, seq: int) -> list[Any] | None:
        """The events of the batch holding `seq`, from `seq` on; None if it is not here."""
        for first, events in self._batches:
            if first <= seq < first + len(events):
                return events if seq == first else events[seq - first:]
        return None

    @property
    def first_seq(self) -> int | None:
        return self._batches[0][0] if self._batches else None

    @property
    def last_seq(self) -> int:
        if not self._batches:
            return 0
        first, events = self._batches[-1]
        return first + len(events) - 1
