"""The delivery engine (tracking.delivery.engine): one sink's cursor, calls and their outcomes, the
same for the agent, sync mode and replay."""
from __future__ import annotations

import logging
import time

import pytest

from tracking import PermanentSinkError
from tracking.delivery.cursors import DeliveryStore
from tracking.delivery.engine import Outcome, RetryPolicy, SinkSlot, SlotState
from tracking.journal.events import METRICS, Metrics
from tracking.sinks.base import Resume, RunContext

FAST = RetryPolicy(initial_s=0.01, max_s=0.02)


def _run(tmp_path) -> RunContext:
    return RunContext(run_id="r", run_name="r", run_dir=tmp_path, experiment="e", config={}, start_time=0.0,
                      mode="async")


def _events(n: int, start: int = 0) -> list[Metrics]:
    return [Metrics(METRICS, {"x": float(i)}, i, 1.0) for i in range(start, start + n)]


class ListSink:
    """Keeps what it accepts; refuses events whose step is in `refuse` (the whole batch, as a server
    refusing a request does), fails `fail` times with a transient error."""

    name = "list"

    def __init__(self, refuse=(), fail: int = 0, rejected_count: bool = False) -> None:
        self.got: list[int] = []
        self.refuse, self.fail, self.rejected_count = set(refuse), fail, rejected_count
        self.writes = 0
        self.opened_with: list[dict] = []
        self.flushes = 0

    def open(self, run):
        self.opened_with.append(run.resume)
        return {"list_id": 7}

    def write(self, events):
        self.writes += 1
        if self.fail:
            self.fail -= 1
            raise ConnectionError("server away")
        bad = [e for e in events if e.step in self.refuse]
        if bad and self.rejected_count:  # delivers the others itself, says how many it refused
            self.got += [e.step for e in events if e.step not in self.refuse]
            raise PermanentSinkError("refused", rejected=len(bad))
        if bad:
            raise PermanentSinkError(f"refused step {bad[0].step}")
        self.got += [e.step for e in events]

    def flush(self):
        self.flushes += 1

    def checkpoint(self):
        return {"count": len(self.got)}

    def close(self, status):
        pass


def test_a_refused_event_is_found_by_splitting_and_the_rest_delivered_once(tmp_path, caplog):
    sink = ListSink(refuse={13, 77})
    slot = SinkSlot(sink, _run(tmp_path), retry=FAST)
    assert slot.open() is Outcome.DELIVERED
    assert slot.write(1, _events(100)) is Outcome.DELIVERED
    assert sink.got == [i for i in range(100) if i not in (13, 77)]
    assert (slot.delivered, slot.rejected, slot.delivered_seq) == (98, 2, 100)
    assert sink.writes < 30  # log2 splits, not one call per event
    assert "refused" in caplog.text


def test_a_sink_that_says_how_many_it_refused_is_not_split(tmp_path):
    sink = ListSink(refuse={5}, rejected_count=True)
    slot = SinkSlot(sink, _run(tmp_path), retry=FAST)
    slot.open()
    assert slot.write(1, _events(50)) is Outcome.DELIVERED
    assert sink.writes == 1 and len(sink.got) == 49 and (slot.delivered, slot.rejected) == (49, 1)


def test_a_transient_failure_backs_off_keeps_the_cursor_and_recovers(tmp_path, caplog):
    sink = ListSink(fail=2)
    slot = SinkSlot(sink, _run(tmp_path), retry=RetryPolicy(initial_s=0.05, max_s=0.05))
    slot.open()
    assert slot.write(1, _events(10)) is Outcome.TRANSIENT
    assert slot.state is SlotState.FAILING and not slot.ready() and slot.delivered_seq == 0
    assert slot.errors == 1 and "ConnectionError: server away" in slot.last_error
    time.sleep(0.06)
    assert slot.write(1, _events(10)) is Outcome.TRANSIENT
    time.sleep(0.06)
    with caplog.at_level(logging.WARNING, logger="tracking"):
        assert slot.write(1, _events(10)) is Outcome.DELIVERED
    assert slot.state is SlotState.OPEN and sink.got == list(range(10)) and slot.errors == 2
    assert "recovered" in caplog.text


def test_a_sink_failing_past_give_up_after_s_gives_up(tmp_path, caplog):
    sink = ListSink(fail=1000)
    slot = SinkSlot(sink, _run(tmp_path), retry=RetryPolicy(initial_s=0.01, max_s=0.01, give_up_after_s=0.05))
    slot.open()
    deadline = time.monotonic() + 5
    while slot.state is not SlotState.GAVE_UP and time.monotonic() < deadline:
        time.sleep(0.011)
        slot.write(1, _events(3))
    assert slot.state is SlotState.GAVE_UP and slot.done and "replay" in caplog.text


def test_permanent_error_from_open_gives_up_at_once(tmp_path):
    class Refuses(ListSink):
        def open(self, run):
            raise PermanentSinkError("no credentials")

    slot = SinkSlot(Refuses(), _run(tmp_path), retry=FAST)
    assert slot.open() is Outcome.GAVE_UP and slot.done and "no credentials" in slot.last_error


def test_commit_saves_the_cursor_and_checkpoint_a_new_slot_resumes_from(tmp_path):
    store = DeliveryStore(tmp_path)
    first = ListSink()
    slot = SinkSlot(first, _run(tmp_path), retry=FAST, store=store)
    slot.open()
    slot.write(1, _events(30))
    assert slot.commit() is Outcome.DELIVERED and first.flushes == 1
    slot.write(31, _events(5, 30))  # delivered, not committed: a successor sends these again
    second = ListSink()
    again = SinkSlot(second, _run(tmp_path), retry=FAST, store=store)
    assert again.delivered_seq == 30 and again.delivered == 30
    again.open()
    assert second.opened_with == [Resume(committed_seq=30, checkpoint={"count": 30}, facts={"list_id": 7})]
    again.write(1, _events(35))  # what it already has is skipped by seq
    assert second.got == list(range(30, 35))


def test_a_sink_that_rebuilds_its_files_gets_the_whole_run_again(tmp_path):
    class Rebuilds(ListSink):
        rebuild_on_resume = True

    store = DeliveryStore(tmp_path)
    slot = SinkSlot(Rebuilds(), _run(tmp_path), retry=FAST, store=store)
    slot.open()
    slot.write(1, _events(20))
    slot.commit()
    again = SinkSlot(Rebuilds(), _run(tmp_path), retry=FAST, store=store)
    assert again.delivered_seq == 0 and again.run.resume == Resume(committed_seq=0, checkpoint=None, facts={"list_id": 7})


def test_events_the_journal_lost_are_skipped_and_counted(tmp_path):
    sink = ListSink()
    slot = SinkSlot(sink, _run(tmp_path), retry=FAST)
    slot.open()
    events = _events(6)
    events[2] = events[5] = None
    assert slot.write(1, events) is Outcome.DELIVERED
    assert sink.got == [0, 1, 3, 4] and slot.lost == 2 and slot.delivered_seq == 6
    slot.skip_to(10)
    assert slot.delivered_seq == 9 and slot.lost == 5


def test_a_sink_has_one_deliverer_at_a_time(tmp_path):
    DeliveryStore(tmp_path).claim("list")
    import subprocess
    import sys

    code = ("import sys; from tracking.delivery.cursors import DeliveryStore; from tracking import SinkBusyError\n"
            f"try:\n    DeliveryStore({str(tmp_path)!r}).claim('list')\n"
            "except SinkBusyError as e:\n    print('busy', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("busy") and "is being delivered by process" in out.stdout


def test_retry_policy_is_checked():
    with pytest.raises(ValueError):
        RetryPolicy(initial_s=0)
    with pytest.raises(ValueError):
        RetryPolicy(give_up_after_s=-1)
    assert [RetryPolicy(0.1, 0.5).delay_s(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
