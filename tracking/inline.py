"""Sync mode: the same recorder and sinks as the worker, called inline on the caller's thread.

Runs on the caller's thread (whichever thread logs); a lock keeps events in one order when several
threads log at once. It is the baseline every benchmark compares async mode against: each log call
pays for the journal and every sink before it returns.

A sink that raises is counted and skipped for that call (retrying here would stall the caller);
what it missed stays in the journal for `python -m tracking replay`.
"""
from __future__ import annotations

import logging
import threading
from typing import Sequence

from .recorder import Recorder
from .sinks.base import PermanentSinkError, RunContext, Sink
from .stats import RunReport, SinkState

__all__ = ["InlineDispatcher"]

_logger = logging.getLogger(__name__)


class InlineDispatcher:
    """Delivers each event to every sink before the log call returns."""

    def __init__(self, recorder: Recorder, sinks: Sequence[Sink], run: RunContext) -> None:
        self.recorder = recorder
        self.sinks = list(sinks)
        self.states = [SinkState(name=s.name) for s in self.sinks]
        # Guards the recorder and the sinks: one event at a time, in one order, for every thread.
        self._lock = threading.RLock()
        for sink, state in zip(self.sinks, self.states):
            ok, facts = self._call(sink, state, sink.open, run)
            if ok:
                state.opened = True
                state.facts.update(facts or {})

    def emit(self, event: tuple) -> None:
        with self._lock:
            first_seq, prepared = self.recorder.record((event,))
            for sink, state in zip(self.sinks, self.states):
                if not state.opened:
                    continue
                try:
                    ok, _ = self._call(sink, state, sink.write, prepared, reraise_permanent=True)
                    refused = False
                except PermanentSinkError as exc:
                    state.rejected += 1
                    state.last_error = f"rejected: {exc}"
                    ok, refused = False, True
                if ok:
                    state.delivered += 1
                # delivered_seq stops at the first event a sink missed (replay resumes there);
                # an event refused for good has nothing to replay
                if (ok or refused) and state.delivered_seq == first_seq - 1:
                    state.delivered_seq = first_seq

    def flush(self) -> bool:
        with self._lock:
            for sink, state in zip(self.sinks, self.states):
                if state.opened and self._call(sink, state, sink.flush)[0]:
                    state.flushed_seq = self.recorder.last_seq
            return all(not s.failing for s in self.states)

    def stop(self, status: str, dropped: int) -> RunReport:
        with self._lock:
            for sink, state in zip(self.sinks, self.states):
                if state.opened:
                    state.closed = self._call(sink, state, sink.close, status)[0]
            return self.recorder.finish(status, self.states, dropped, timed_out=False)

    def _call(self, sink: Sink, state: SinkState, fn, *args, reraise_permanent: bool = False) -> tuple[bool, object]:
        """(True, result) or (False, None) after counting and reporting the sink's exception."""
        try:
            result = fn(*args)
        except PermanentSinkError:
            if reraise_permanent:
                raise
            return False, None
        except Exception as exc:  # a sink may raise anything; the caller must not see it
            state.errors += 1
            state.last_error = f"{type(exc).__name__}: {exc}"
            if not state.failing:
                _logger.warning(
                    "tracking: sink %r failed in %s (%s); its events stay in the journal for replay",
                    sink.name, getattr(fn, "__name__", fn), state.last_error,
                )
            state.failing = True
            return False, None
        state.failing = False
        return True, result
