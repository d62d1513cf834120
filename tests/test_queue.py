"""The event queue (tracking.recorder.queue): the full-queue policies, and control markers that no policy drops."""
from __future__ import annotations

import threading
import time

from tracking.recorder.queue import DROP, EventQueue


class Marker:
    pass


def test_drop_policy_never_drops_another_threads_marker():
    """The race: our event is appended, another thread's flush marker lands right after it, and then
    our put() sees the queue full and drops the newest item, which is that marker. It must stay."""
    queue = EventQueue(64 * 1024, DROP)
    for _ in range(queue.max_events - 1):
        queue.put(("metrics", {"x": 1.0}, None, 0.0))
    queue._items.append(("metrics", {"x": 2.0}, None, 0.0))  # our put(), before its length check
    marker = Marker()
    queue.put_control(marker)  # another thread's flush()
    queue._on_pressure()  # our put()'s length check, now
    items = queue.drain(len(queue))
    assert items[-1] is marker and items[-2][1] == {"x": 2.0}


def test_drop_policy_under_two_flooding_threads_keeps_every_marker():
    queue = EventQueue(16 * 1024, DROP)
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            queue.put(("metrics", {"x": 1.0}, None, 0.0))

    threads = [threading.Thread(target=flood) for _ in range(2)]
    for thread in threads:
        thread.start()
    markers, seen = [Marker() for _ in range(200)], []
    try:
        for marker in markers:
            queue.put_control(marker)
            seen += [item for item in queue.drain(len(queue)) if type(item) is Marker]
            time.sleep(0.0005)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    seen += [item for item in queue.drain(len(queue)) if type(item) is Marker]
    assert seen == markers and queue.dropped > 0


def test_block_policy_waits_for_room_and_loses_nothing():
    queue = EventQueue(16 * 1024, "block")
    received: list = []
    done = threading.Event()

    def consume():
        while not done.is_set() or len(queue):
            received.extend(queue.drain(100))
            time.sleep(0.0005)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(5000):
        queue.put(("metrics", {"x": float(i)}, i, 0.0))
    done.set()
    consumer.join()
    assert [e[2] for e in received] == list(range(5000)) and queue.dropped == 0
