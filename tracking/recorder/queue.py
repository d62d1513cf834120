"""The event queue between log calls and the writer thread: a deque, a memory budget, a full-queue policy.

`put` runs on the caller's thread (any number of them); `drain` runs on the writer thread only.

The hot path is `deque.append` plus one length comparison. Both are atomic under the GIL, so the
producers take no lock; several threads appending keep one global order, which is the journal's
order. The memory budget is enforced as a maximum length: the writer measures what queued events
actually weigh and sets `max_events = memory_budget_bytes / bytes_per_event`.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Callable

from ..core.errors import QueueClosedError

__all__ = ["EventQueue", "BLOCK", "DROP", "POLICIES", "INITIAL_EVENT_BYTES", "event_bytes"]

BLOCK = "block"
DROP = "drop"
POLICIES = (BLOCK, DROP)

#: a first guess at what a queued event weighs (a 1-key SCALARS tuple with its tuples and float)
INITIAL_EVENT_BYTES = 300
#: a blocked producer resumes once the queue is below this fraction of its maximum
_RESUME_FRACTION = 0.9
_BLOCK_POLL_S = 0.0005


class EventQueue:
    """A bounded FIFO of events with an explicit policy for when it is full.

    `wake` is set when the queue holds `wake_at_events` (the writer then drains at once instead of
    at its next interval) and whenever a producer hits the limit.
    """

    def __init__(
        self,
        memory_budget_bytes: int,
        policy: str = BLOCK,
        wake_at_events: int = 4096,
        is_consumer_alive: Callable[[], bool] = lambda: True,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"full_queue_policy must be one of {POLICIES}, got {policy!r}")
        if memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be > 0, got {memory_budget_bytes!r}")
        self.policy = policy
        self.memory_budget_bytes = memory_budget_bytes
        self.wake = threading.Event()
        self.dropped = 0
        #: control markers put so far: a drain that saw no new ones holds events only
        self.markers_put = 0
        # Guards markers_put (flush() and end_run() may come from two threads at once); log calls
        # never take it.
        self._control_lock = threading.Lock()
        self._items: deque = deque()
        self._wake_at = wake_at_events
        self._is_consumer_alive = is_consumer_alive
        self.set_event_bytes(INITIAL_EVENT_BYTES)

    # -- caller's thread -------------------------------------------------------------------------

    def put(self, event: object) -> None:
        """Append `event`; the full-queue policy applies only past the soft limit (rare)."""
        items = self._items
        items.append(event)
        if len(items) >= self._soft_limit:
            self._on_pressure()

    def put_control(self, marker: object) -> None:
        """Append a control marker (flush, stop); never dropped, never blocks, wakes the writer."""
        with self._control_lock:
            self.markers_put += 1  # before the append: a drain that sees the marker sees the count
            self._items.append(marker)
        self.set_wake()

    def __len__(self) -> int:
        return len(self._items)

    def set_wake(self) -> None:
        """Ask the writer to drain now rather than at its next interval (any thread)."""
        if not self.wake.is_set():  # setting a set Event costs a lock: ~10x a put, on every put past the limit
            self.wake.set()

    def _on_pressure(self) -> None:
        self.set_wake()
        if len(self._items) < self.max_events:
            return
        if self.policy == DROP:
            self._drop_newest()
            return
        self._wait_for_room()

    def _drop_newest(self) -> None:
        items = self._items
        try:
            newest = items.pop()
        except IndexError:  # the writer drained it all in the meantime
            return
        if type(newest) is not tuple:
            # Another thread's flush or stop marker, appended after our event: markers are never
            # dropped (that flush would wait out its deadline). Put it back and drop nothing: the
            # queue is over its limit by one event per producer at most, until the next drain.
            items.append(newest)
            return
        self.dropped += 1  # a race between producers can miscount by one; the policy is lossy anyway

    def _wait_for_room(self) -> None:
        resume_at = int(self.max_events * _RESUME_FRACTION)
        while len(self._items) > resume_at:
            if not self._is_consumer_alive():
                raise QueueClosedError(
                    "the tracking writer thread is not running, so the full queue cannot drain; "
                    "the run was ended or the thread died (see the errors logged above)"
                )
            self.set_wake()
            time.sleep(_BLOCK_POLL_S)

    # -- writer thread ---------------------------------------------------------------------------

    def drain(self, limit: int) -> list:
        """Pop up to `limit` items, oldest first."""
        items = self._items
        popleft = items.popleft
        out: list = []
        append = out.append
        try:
            for _ in range(min(len(items), limit)):
                append(popleft())
        except IndexError:
            pass  # a producer's drop policy popped the newest item meanwhile: that is all there is
        return out

    def set_event_bytes(self, bytes_per_event: int) -> None:
        """Re-derive the length limit from what an event was measured to weigh."""
        self.bytes_per_event = max(int(bytes_per_event), 64)
        self.max_events = max(self.memory_budget_bytes // self.bytes_per_event, 16)
        self._soft_limit = min(self._wake_at, self.max_events)

    def discard_all(self) -> None:
        """Forget every queued item (a forked child must not deliver its parent's events)."""
        self._items = deque()


def event_bytes(event: tuple) -> int:
    """What one event weighs in memory: the tuple, its tuples or dict and the floats in them (approximate)."""
    size = sys.getsizeof(event)
    for item in event:
        size += sys.getsizeof(item)
        if type(item) is dict or type(item) is tuple:
            size += 32 * len(item)  # a float object per value; keys are usually shared/interned
    return size
