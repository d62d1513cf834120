"""Step resolution: what `step=None` becomes (one past the highest step any of the event's keys used).

Runs where a run's events are put in order, once per event: the training process's writer thread
(`tracking.recorder.batch`), or the caller's thread in sync mode; so both modes give the same steps,
and the journal holds every step resolved.
"""
from __future__ import annotations

from typing import Callable

from ..core.speedups import speedups
from ..journal.events import METRICS, SCALARS

if speedups is not None:  # C: the common batch (SCALARS events, each with its step) in one call
    note_steps = speedups.note_steps
else:
    def note_steps(events: list, seen: dict, max_seen: int) -> bool:
        return False  # not taken: the loop below goes over the batch

__all__ = ["StepResolver"]


class StepResolver:
    """Gives `step=None` a value: one past the highest step any of the event's keys has used.

    So `log_metric("loss", x)` called repeatedly steps 0, 1, 2, ... per key, and `log_metrics(d)`
    without a step gives all of d's values one shared step. Runs where events are put in order
    (the writer thread, or the caller in sync mode), so both modes give the same steps.

    Events with a step (the trainer's) only note the highest step per key *set* (one tuple and
    one dict lookup, not one per key); the per-key table is brought up to date from those notes
    when an event without a step needs it.
    """

    __slots__ = ("_next", "_seen")

    #: distinct key sets noted before they are folded into the per-key table regardless
    _MAX_SEEN = 1024

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._seen: dict[tuple[str, ...], int] = {}  # key set -> highest explicit step

    def resolve_all(self, events: list[tuple], other: Callable[[tuple], tuple | None]) -> list[tuple]:
        """`resolve` for every metrics event of a batch, in place and in one loop (the writer's hot
        path: an event with a step stays as it is); every other event is replaced by what `other`
        returns for it, and left out where that is None."""
        seen, fold_at = self._seen, self._MAX_SEEN
        if type(events) is list and note_steps(events, seen, fold_at):
            return events  # every event a SCALARS with its step: only the maxima were to note
        dropped = False
        for index, event in enumerate(events):
            kind = event[0]
            if kind is not SCALARS and kind is not METRICS:
                events[index] = prepared = other(event)
                dropped |= prepared is None
                continue
            step = event[3] if kind is SCALARS else event[2]
            if step is None:
                events[index] = self._assign(event)
                continue
            keys = _keys(event)
            if seen.get(keys, -1) < step:
                if len(seen) >= fold_at and keys not in seen:
                    self._fold()
                seen[keys] = step
        return [event for event in events if event is not None] if dropped else events

    def resolve(self, event: tuple) -> tuple:
        """One metrics event with its step (a step=None event gets one)."""
        return self.resolve_all([event], _unexpected)[0]

    def _assign(self, event: tuple) -> tuple:
        self._fold()
        nxt = self._next
        keys = _keys(event)
        step = max((nxt.get(k, 0) for k in keys), default=0)
        for key in keys:
            nxt[key] = step + 1
        if event[0] is SCALARS:
            return (SCALARS, event[1], event[2], step, event[4])
        return (METRICS, event[1], step, event[3])

    def _fold(self) -> None:
        nxt = self._next
        for keys, step in self._seen.items():
            following = step + 1
            for key in keys:
                if nxt.get(key, 0) < following:
                    nxt[key] = following
        self._seen.clear()


def _keys(event: tuple) -> tuple[str, ...]:
    """A metrics event's keys as a tuple (SCALARS holds one; METRICS a dict)."""
    return event[1] if event[0] is SCALARS else tuple(event[1])


def _unexpected(event: tuple) -> tuple:
    raise TypeError(f"StepResolver.resolve takes metrics events, got {event[0]!r}")
