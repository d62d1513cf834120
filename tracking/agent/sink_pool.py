"""`SinkPool`: the agent's sink instances, and which run holds which.

Runs on the agent's event loop thread (`take` awaits a build in a worker thread, or the instance a
previous run still holds).
"""
from __future__ import annotations

import threading

import anyio

from ..delivery.specs import SinkSpec
from ..sinks.base import Sink

__all__ = ["SinkPool"]


class SinkPool:
    """The agent's sinks: an instance per run where a spec can build one (a sink finishing a run in
    the background must not be opened for the next), the one instance where it can't (a sink given
    as an instance, on a thread of the training process): the next run waits for it to be free."""

    def __init__(self, objects: dict[str, Sink]) -> None:
        self.names: list[str] = []
        self._specs: dict[str, SinkSpec] = {}
        self._objects = objects
        self._idle: dict[str, list[tuple[Sink, threading.Lock]]] = {}
        self._freed: dict[str, anyio.Event] = {}

    def configure(self, specs: tuple[SinkSpec, ...]) -> dict[str, str]:
        """Build each sink once (the first run's instance); returns the ones that failed, with why."""
        errors: dict[str, str] = {}
        for spec in specs:
            try:
                sink = self._objects[spec.name] if spec.how == "object" else spec.build()
            except Exception as exc:  # reported to the tracker, which says so at once
                errors[spec.name] = f"{type(exc).__name__}: {exc}"
                continue
            self.names.append(spec.name)
            self._specs[spec.name] = spec
            # Each instance has its own lock, for all its runs: a call abandoned at an end-of-run
            # deadline keeps running in its thread, and the next run's first call waits for it.
            self._idle[spec.name] = [(sink, threading.Lock())]
        return errors

    async def take(self, name: str) -> tuple[Sink, threading.Lock]:
        while not self._idle[name]:
            spec = self._specs[name]
            if spec.how != "object":
                sink = await anyio.to_thread.run_sync(spec.build)
                return sink, threading.Lock()
            freed = self._freed.setdefault(name, anyio.Event())
            await freed.wait()  # the one instance is still ending the previous run
        return self._idle[name].pop()

    def give_back(self, name: str, sink: Sink, lock: threading.Lock) -> None:
        self._idle[name].append((sink, lock))
        freed = self._freed.pop(name, None)
        if freed is not None:
            freed.set()
