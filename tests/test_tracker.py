"""The Tracker's API as BatteryML's docs use it, in both modes, against the real file system."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import re
import threading
import time

import pytest

from tracking import NoActiveRunError, RunAlreadyActiveError, RunEndedError, Tracker
from tracking.sinks.json_sink import JsonSink
from tracking.journal import read_journal
from tracking.journal.rundir import read_meta

from helpers.extras import needs
from helpers.sinks import FailingOpenSink, FailingSink, GateSink, RecordingSink

MODES = ["async", "sync"]


@needs("torch")
@pytest.mark.parametrize("mode", MODES)
def test_documented_usage_with_json_tracker(make_tracker, mode):
    import torch

    tracker = make_tracker(["json"], mode=mode)
    config = {"model": "mlp", "learning_rate": 1e-3, "batch_size": 32}
    run_id = tracker.start_run(run_name="experiment_001", config=config)
    for epoch in range(3):
        tracker.log_metric("train_loss", 0.5 / (epoch + 1), step=epoch)
        tracker.log_metrics({"train_rmse": 0.05 * epoch, "val_rmse": 0.04, "val_mae": 0.025}, step=epoch)
    ckpt = tracker.base_dir.parent / "best.pt"
    torch.save({"w": torch.ones(2)}, ckpt)
    tracker.log_artifact(str(ckpt), "model.pt")
    tracker.set_tag("status", "baseline")
    tracker.end_run()

    run_dir = tracker.base_dir / run_id
    with open(run_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics == {"train_loss": 0.5 / 3, "train_rmse": 0.1, "val_rmse": 0.04, "val_mae": 0.025}
    assert json.loads((run_dir / "config.json").read_text()) == config
    assert torch.load(run_dir / "artifacts" / "model.pt")["w"].tolist() == [1.0, 1.0]
    meta = read_meta(run_dir)
    assert meta["status"] == "FINISHED" and meta["tags"] == {"status": "baseline"}
    assert meta["run_name"] == "experiment_001" and meta["end_time"] >= meta["start_time"]
    rows = list(csv.DictReader(open(run_dir / "step_metrics.csv")))
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert float(rows[2]["train_loss"]) == 0.5 / 3


def test_step_csv_of_a_run_longer_than_memory_holds_equals_the_in_memory_one(make_tracker):
    """Rows spilled to disk in sorted runs and merged at the end give the same CSV, with one row per
    step even when a step's values arrive in different runs, NaN and ±inf kept."""
    rng = random.Random(3)
    steps = list(range(300)) + [rng.randrange(300) for _ in range(200)]  # revisits span spills
    values = [float("nan"), float("inf"), -0.0, 1e300] + [rng.random() for _ in range(len(steps) - 4)]
    csvs = []
    spilled_runs = []
    for limit in (7, 1_000_000):
        sink = JsonSink(max_rows_in_memory=limit)
        tracker = make_tracker([sink], mode="sync")
        tracker.start_run()
        for i, (step, value) in enumerate(zip(steps, values)):
            tracker.log_metric(f"k{i % 5}", value, step=step)
        tracker.end_run()
        run_dir = tracker.get_run_dir()
        assert not (run_dir / ".step_metrics.spill").exists()
        csvs.append((run_dir / "step_metrics.csv").read_text())
        spilled_runs.append(len(sink._spilled))
    assert spilled_runs[0] > 40 and spilled_runs[1] == 0  # many runs merged (one file descriptor), vs none
    assert csvs[0] == csvs[1]
    rows = list(csv.DictReader(io.StringIO(csvs[0])))
    assert [int(r["step"]) for r in rows] == list(range(300))


def test_a_sink_that_keeps_up_is_fed_from_memory_not_the_journal(make_tracker):
    """While events keep coming, a sink that keeps up gets the fresh events the agent decoded once;
    the journal is read back only by a sink that fell behind what memory holds."""
    sink = RecordingSink()
    sink.blocking = False  # called on the agent loop's thread, as the JSON and TensorBoard sinks are
    tracker = make_tracker([sink], batch_max_events=100)
    tracker.start_run()
    assert tracker.flush(timeout_s=30)  # the sink is open before the producer starts
    for step in range(50_000):
        tracker.log_metric("loss", 0.5, step)
        if step % 100 == 99:
            time.sleep(0.001)  # ~100,000 events/s: fast, but not faster than the sink
    report = tracker.end_run()
    assert [ev[2] for ev in sink.events] == list(range(50_000))
    assert report.sinks["recording"]["journal_chunks"] == 0


def test_a_sink_far_behind_catches_up_from_the_journal_in_order(make_tracker):
    gate = GateSink()
    tracker = make_tracker([gate], max_sink_backlog_events=1000)
    tracker.start_run()
    tracker.log_metric("x", 0.0, step=0)
    assert gate.entered.wait(30)
    for step in range(1, 30_000):
        tracker.log_metric("x", float(step), step)
    assert tracker.flush(timeout_s=0.5) is False  # the gate holds the sink
    gate.gate.set()
    report = tracker.end_run(timeout_s=60)
    assert report.complete and [ev[2] for ev in gate.events] == list(range(30_000))
    assert report.sinks["gate"]["journal_chunks"] >= 1


def test_a_non_blocking_sink_with_a_slow_close_neither_holds_the_deadline_nor_the_next_run(make_tracker):
    """`blocking = False` sinks are written on the worker's thread, but their close() runs in the
    pool, where the end-of-run deadline can leave it; the next run's worker is not stuck behind it."""

    class SlowCloseSink(RecordingSink):
        blocking = False

        def close(self, status: str) -> None:
            time.sleep(3.0)
            super().close(status)

    slow, other = SlowCloseSink("slow"), RecordingSink("other")
    tracker = make_tracker([slow, other], end_timeout_s=1.0)
    tracker.start_run()
    for step in range(10):
        tracker.log_metric("loss", 0.5, step)
    started = time.monotonic()
    tracker.end_run()
    assert time.monotonic() - started < 1.7  # the deadline (1 s), not the close (3 s)
    assert len(other.events) == 10 and len(slow.events) == 10
    tracker.start_run()  # slow.close() is still running in its pool thread
    tracker.log_metric("loss", 0.5, 0)
    assert tracker.flush(timeout_s=10.0)
    assert len(other.events) == 11 and len(slow.events) == 11  # waited for slow's lock, in the pool


def test_run_id_names_the_directory_and_never_collides(make_tracker):
    tracker = make_tracker()
    ids = []
    for _ in range(5):
        ids.append(tracker.start_run("same"))
        tracker.end_run()
    assert len(set(ids)) == 5
    for run_id in ids:
        assert re.fullmatch(r"same_\d{8}_\d{6}_[0-9a-f]{6}", run_id)
        assert (tracker.base_dir / run_id / "meta.json").is_file()
    assert tracker.get_run_dir() == tracker.base_dir / ids[-1]


@needs("torch")
@pytest.mark.parametrize("mode", MODES)
def test_in_place_tensor_change_after_the_call_does_not_change_the_logged_value(make_tracker, mode):
    import torch

    sink = RecordingSink()
    tracker = make_tracker([sink], mode=mode)
    tracker.start_run()
    running = torch.tensor(1.0)
    for step in range(3):
        tracker.log_metric("running_loss", running, step=step)
        tracker.log_metrics({"also": running}, step=step)
        running += 1.0  # `running_loss += loss` right after the call
    tracker.end_run()
    logged = [(ev[1], ev[2]) for ev in sink.events if ev[0] == "metrics"]
    assert logged == [
        ({"running_loss": 1.0}, 0), ({"also": 1.0}, 0),
        ({"running_loss": 2.0}, 1), ({"also": 2.0}, 1),
        ({"running_loss": 3.0}, 2), ({"also": 3.0}, 2),
    ]


@needs("numpy")
def test_numpy_scalars_ints_and_non_finite_values_are_kept(make_tracker):
    import numpy as np

    tracker = make_tracker(["json"])
    run_id = tracker.start_run()
    tracker.log_metrics({"f32": np.float32(0.5), "i64": np.int64(3), "int": 7, "nan": float("nan"),
                         "inf": float("inf"), "ninf": -np.inf, "arr0d": np.array(2.5)}, step=0)
    tracker.end_run()
    metrics = json.load(open(tracker.base_dir / run_id / "metrics.json"))
    assert metrics["f32"] == 0.5 and metrics["i64"] == 3.0 and metrics["int"] == 7.0 and metrics["arr0d"] == 2.5
    assert np.isnan(metrics["nan"]) and metrics["inf"] == float("inf") and metrics["ninf"] == float("-inf")
    (_, event), = read_journal(tracker.base_dir / run_id).events
    assert np.isnan(event[1]["nan"]) and event[1]["inf"] == float("inf")


def test_missing_steps_count_up_per_key(make_tracker):
    sink = RecordingSink()
    tracker = make_tracker([sink])
    tracker.start_run()
    for _ in range(3):
        tracker.log_metric("a", 1.0)
    tracker.log_metrics({"a": 1.0, "b": 2.0})
    tracker.log_metric("b", 3.0, step=10)
    tracker.log_metric("b", 4.0)
    tracker.end_run()
    steps = [(tuple(ev[1]), ev[2]) for ev in sink.events]
    assert steps == [(("a",), 0), (("a",), 1), (("a",), 2), (("a", "b"), 3), (("b",), 10), (("b",), 11)]


def test_context_manager_marks_failed_and_reraises(make_tracker):
    tracker = make_tracker()
    with pytest.raises(ZeroDivisionError):
        with tracker.run("boom") as run_id:
            tracker.log_metric("x", 1.0)
            1 / 0
    assert read_meta(tracker.base_dir / run_id)["status"] == "FAILED"
    with tracker:
        ok_id = tracker.start_run("ok")
    assert read_meta(tracker.base_dir / ok_id)["status"] == "FINISHED"


def test_lifecycle_errors_are_raised_at_the_call(make_tracker):
    tracker = make_tracker()
    with pytest.raises(NoActiveRunError, match="start_run"):
        tracker.log_metric("x", 1.0)
    tracker.start_run("a")
    with pytest.raises(RunAlreadyActiveError, match="end_run"):
        tracker.start_run("b")
    tracker.end_run()
    with pytest.raises(RunEndedError, match="has ended"):
        tracker.log_metrics({"x": 1.0})
    with pytest.raises(RunEndedError):
        tracker.set_tag("k", "v")
    assert tracker.end_run() is tracker.last_report  # idempotent


@needs("torch")
@pytest.mark.parametrize("mode", MODES)
def test_artifact_keeps_content_at_call_time(make_tracker, tmp_path, mode):
    import torch

    tracker = make_tracker(["json"], mode=mode)
    run_id = tracker.start_run()
    ckpt = tmp_path / "checkpoint.pt"
    for epoch in range(3):
        torch.save({"epoch": epoch}, ckpt)  # rewritten in place every step, as a training loop does
        tracker.log_artifact(ckpt, f"epoch_{epoch}.pt")
    torch.save({"epoch": 99}, ckpt)
    tracker.end_run()
    for epoch in range(3):
        assert torch.load(tracker.base_dir / run_id / "artifacts" / f"epoch_{epoch}.pt")["epoch"] == epoch


def test_artifact_names_in_subfolders(make_tracker, tmp_path):
    tracker = make_tracker()
    run_id = tracker.start_run()
    src = tmp_path / "plot.png"
    src.write_bytes(b"png")
    tracker.log_artifact(src, "plots/attention.png")
    tracker.end_run()
    assert (tracker.base_dir / run_id / "artifacts" / "plots" / "attention.png").read_bytes() == b"png"


def test_log_params_updates_config_json(make_tracker):
    tracker = make_tracker()
    config = {"model": {"name": "mlp", "hidden_dims": [64, 32]}}
    run_id = tracker.start_run(config=config)
    config["model"]["name"] = "changed after start_run"  # what was logged must not change
    tracker.log_params({"seed": 3})
    tracker.end_run()
    assert json.load(open(tracker.base_dir / run_id / "config.json")) == {
        "model": {"name": "mlp", "hidden_dims": [64, 32]}, "seed": 3}


@pytest.mark.parametrize("mode", MODES)
def test_figures_are_saved_as_png(make_tracker, mode):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracker = make_tracker(mode=mode)
    run_id = tracker.start_run()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    tracker.log_figure(fig, "curve")
    plt.close(fig)
    tracker.end_run()
    assert (tracker.base_dir / run_id / "figures" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _normalised_files(run_dir):
    out = {}
    for name in ("config.json", "metrics.json", "step_metrics.csv"):
        out[name] = (run_dir / name).read_text()
    journal = read_journal(run_dir)
    # timestamps aside; artifact paths relative to their run directory
    out["journal"] = [
        (seq, tuple(str(x).replace(str(run_dir), "RUN") for x in ev[:-1])) for seq, ev in journal.events
    ]
    out["artifacts"] = sorted(p.name for p in (run_dir / "artifacts").iterdir())
    meta = read_meta(run_dir)
    out["meta"] = {k: meta[k] for k in ("status", "tags", "events", "experiment")}
    return out


def test_sync_and_async_runs_produce_the_same_files(make_tracker, tmp_path):
    src = tmp_path / "model.pt"
    src.write_bytes(b"weights")
    dirs = []
    for mode in MODES:
        tracker = make_tracker(["json"], mode=mode)
        run_id = tracker.start_run("same", config={"lr": 0.1, "dims": [1, 2]})
        for step in range(50):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 50}, step=step)
            tracker.log_metric("lr", 0.1 * 0.9**step)
        tracker.log_params({"extra": True})
        tracker.set_tag("k", "v")
        tracker.log_artifact(src)
        tracker.end_run()
        dirs.append(tracker.base_dir / run_id)
    assert _normalised_files(dirs[0]) == _normalised_files(dirs[1])


def test_metrics_json_is_written_on_flush_not_per_call(make_tracker):
    tracker = make_tracker(["json"])
    run_id = tracker.start_run()
    path = tracker.base_dir / run_id / "metrics.json"
    tracker.log_metric("loss", 1.0)
    assert tracker.flush(timeout_s=10)
    assert json.load(open(path)) == {"loss": 1.0}
    tracker.log_metric("loss", 2.0)
    assert tracker.flush(timeout_s=10)
    assert json.load(open(path)) == {"loss": 2.0}


def test_threads_lose_nothing_and_keep_each_keys_order(make_tracker):
    sink = RecordingSink()
    tracker = make_tracker([sink], memory_budget_bytes=2**20)
    tracker.start_run()
    n_threads, n_events = 8, 100_000

    def work(t):
        for i in range(n_events):
            tracker.log_metric(f"thread{t}", float(i), step=i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # The sink stays in this process: a thread here decodes 800,000 events from the journal after
    # the loggers (~6-9 s on 2 cores); the deadline bounds a hang, not the speed.
    report = tracker.end_run(timeout_s=60)
    assert report.complete and report.events == n_threads * n_events
    per_key: dict[str, list[float]] = {}
    for ev in sink.events:
        (key, value), = ev[1].items()
        per_key.setdefault(key, []).append(value)
    assert per_key == {f"thread{t}": [float(i) for i in range(n_events)] for t in range(n_threads)}


def test_flush_waits_until_every_sink_has_the_events(make_tracker):
    sinks = [RecordingSink("a"), RecordingSink("b")]
    tracker = make_tracker(sinks)
    tracker.start_run()
    for i in range(1000):
        tracker.log_metric("x", float(i), step=i)
    assert tracker.flush(timeout_s=10)
    assert all(len(s.events) == 1000 and s.calls[-1] == "flush" for s in sinks)
    stats = tracker.stats()
    assert stats.delivered == {"a": 1000, "b": 1000} and stats.queue_depth == 0 and stats.enqueued == 1000


def test_slow_sink_does_not_delay_the_others_or_the_caller(make_tracker):
    gate, fast = GateSink(), RecordingSink("fast")
    tracker = make_tracker([gate, fast])
    tracker.start_run()
    tracker.log_metric("x", 1.0, step=0)
    assert gate.entered.wait(10)  # the gate sink is now stuck inside write()
    for i in range(1, 2000):
        tracker.log_metric("x", float(i), step=i)
    tracker.flush(timeout_s=0.5)  # the stuck sink makes this time out ...
    assert len(fast.events) == 2000  # ... but the healthy sink has everything
    assert tracker.stats().undelivered["gate"] > 0
    gate.gate.set()
    report = tracker.end_run(timeout_s=10)
    assert report.complete and len(gate.events) == 2000


def test_failing_sink_is_reported_retried_and_isolated(make_tracker):
    bad, good = FailingSink(), RecordingSink("good")
    from tracking import RetryPolicy

    tracker = make_tracker([bad, good], retry=RetryPolicy(initial_s=0.01, max_s=0.05))
    run_id = tracker.start_run()
    for i in range(100):
        tracker.log_metric("x", float(i), step=i)
    assert tracker.flush(timeout_s=10)  # a failing sink doesn't hold flush() hostage
    assert len(good.events) == 100
    assert tracker.stats().sink_errors["failing"] >= 1
    report = tracker.end_run(timeout_s=0.5)
    assert not report.complete and report.sinks["failing"]["undelivered"] == 100
    assert report.sinks["good"]["undelivered"] == 0
    assert "replay" in report.replay_commands[0] and "--to failing" in report.replay_commands[0]
    meta = read_meta(tracker.base_dir / run_id)
    assert meta["sinks"]["failing"]["undelivered"] == 100
    assert "simulated sink failure" in meta["sinks"]["failing"]["last_error"]


def test_failing_sink_catches_up_when_it_recovers(make_tracker):
    from tracking import RetryPolicy

    bad = FailingSink()
    tracker = make_tracker([bad], retry=RetryPolicy(initial_s=0.01, max_s=0.05), max_sink_backlog_events=100)
    tracker.start_run()
    for i in range(5000):
        tracker.log_metric("x", float(i), step=i)
    tracker.flush(timeout_s=0.2)
    bad.failing = False
    report = tracker.end_run(timeout_s=20)
    assert report.complete
    assert [ev[1]["x"] for ev in bad.events] == [float(i) for i in range(5000)]


def test_drop_policy_counts_what_it_drops(make_tracker):
    gate = GateSink()
    tracker = make_tracker([gate], full_queue_policy="drop", memory_budget_bytes=64 * 1024,
                           batch_interval_s=5.0)
    tracker.start_run()
    gate.gate.set()
    for i in range(20000):
        tracker.log_metric("x", float(i), step=i)
    report = tracker.end_run()
    assert report.dropped > 0
    assert report.events + report.dropped == 20000
    assert len(gate.events) == report.events


def test_block_policy_loses_nothing_with_a_tiny_budget(make_tracker):
    sink = RecordingSink()
    tracker = make_tracker([sink], memory_budget_bytes=16 * 1024)
    tracker.start_run()
    for i in range(20000):
        tracker.log_metric("x", float(i), step=i)
    report = tracker.end_run()
    assert report.complete and report.dropped == 0 and len(sink.events) == 20000


def test_aflush_inside_asyncio(make_tracker):
    sink = RecordingSink()
    tracker = make_tracker([sink])
    tracker.start_run()

    async def main():
        for i in range(10):
            tracker.log_metric("x", float(i))
        return await tracker.aflush(timeout_s=10)

    assert asyncio.run(main()) is True
    assert len(sink.events) == 10


def test_sinks_see_open_writes_flush_close_in_order(make_tracker):
    sink = RecordingSink()
    tracker = make_tracker([sink])
    run_id = tracker.start_run("order", config={"a": 1})
    tracker.log_metric("x", 1.0)
    tracker.flush()
    tracker.end_run("KILLED")
    assert sink.calls[0] == "open" and sink.calls[-1] == "close" and "flush" in sink.calls
    assert sink.statuses == ["KILLED"] and sink.runs[0].run_id == run_id and sink.runs[0].config == {"a": 1}
    assert read_meta(tracker.base_dir / run_id)["recording_opened"] is True


def test_non_zero_rank_is_inert(tmp_path):
    tracker = Tracker(["json"], base_dir=tmp_path, rank=1)
    assert tracker.start_run("r") is None
    tracker.log_metric("x", 1.0)
    tracker.log_artifact(tmp_path / "missing-is-fine-when-inert")
    tracker.end_run()
    assert list(tmp_path.iterdir()) == []


def test_stats_report_queue_and_lag(make_tracker):
    tracker = make_tracker()
    tracker.start_run()
    tracker.log_metrics({"a": 1.0, "b": 2.0})
    tracker.flush()
    stats = tracker.stats()
    assert stats.enqueued == 1 and stats.dropped == 0 and stats.sink_errors == {"json": 0}
    assert 0 <= stats.writer_lag_s < 5


def test_a_sink_that_gives_up_at_open_does_not_stop_the_others(make_tracker):
    from tracking import PermanentSinkError

    class Refuses(RecordingSink):
        def open(self, run):
            raise PermanentSinkError("no credentials")

    good = RecordingSink("good")
    tracker = make_tracker([Refuses("refuses"), good])
    tracker.start_run()
    for i in range(100):
        tracker.log_metric("x", float(i), step=i)
    assert tracker.flush(timeout_s=10)
    report = tracker.end_run(timeout_s=10)
    assert len(good.events) == 100 and report.sinks["good"]["undelivered"] == 0
    assert report.sinks["refuses"]["undelivered"] == 100 and "no credentials" in report.sinks["refuses"]["last_error"]


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_sink_whose_open_fails_is_opened_again_and_gets_every_event_once(make_tracker, mode):
    """A transient failure in open() (a database another process is still creating) is retried as
    an open: the sink is never written to before it opened, and catches up from the journal."""
    from tracking import RetryPolicy

    sink = FailingOpenSink(failures=2)
    tracker = make_tracker([sink], mode=mode, retry=RetryPolicy(initial_s=0.01, max_s=0.05))
    tracker.start_run()
    for i in range(300):
        tracker.log_metric("x", float(i), step=i)
    assert tracker.flush(timeout_s=20)
    report = tracker.end_run(timeout_s=20)
    assert report.complete, report.summary()
    assert sink.open_attempts == 3 and sink.calls.count("open") == 1
    assert [ev[2] for ev in sink.events] == list(range(300)) and sink.statuses == ["FINISHED"]
    assert report.sinks["failing_open"]["errors"] == 2


def test_flush_right_after_start_waits_for_the_sinks_to_open(make_tracker):
    import time as _time

    class SlowOpen(RecordingSink):
        def open(self, run):
            _time.sleep(0.3)
            return super().open(run)

    sink = SlowOpen()
    tracker = make_tracker([sink])
    tracker.start_run()
    assert tracker.flush(timeout_s=10)
    assert sink.calls[:2] == ["open", "flush"]


def test_an_unhashable_sink_works(make_tracker):
    from dataclasses import dataclass, field

    @dataclass  # eq=True without frozen: instances are unhashable, as many user classes are
    class DataclassSink:
        name: str = "dc"
        events: list = field(default_factory=list)

        def open(self, run):
            return None

        def write(self, events):
            self.events.extend(events)

        def flush(self):
            pass

        def close(self, status):
            pass

    sink = DataclassSink()
    tracker = make_tracker([sink])
    tracker.start_run()
    tracker.log_metric("x", 1.0)
    assert tracker.end_run().complete and len(sink.events) == 1


class _UserSink:
    """A user's sink, picklable but not declared portable: the instance itself must get the events."""

    name = "user"

    def __init__(self) -> None:
        self.steps: list[int] = []

    def open(self, run):
        pass

    def write(self, events):
        self.steps += [event[2] for event in events]

    def flush(self):
        pass

    def close(self, status):
        pass


class _PortableUserSink(_UserSink):
    name = "portable_user"
    portable = True  # its settings are all there is: a copy in the agent will do


def test_a_sink_instance_given_to_the_tracker_is_the_one_that_receives_the_events(make_tracker):
    sink = _UserSink()
    tracker = make_tracker([sink])
    tracker.start_run()
    for step in range(50):
        tracker.log_metric("x", float(step), step)
    assert tracker.end_run().complete
    assert sink.steps == list(range(50)) and tracker.stats().placement == {"user": "thread"}


def test_a_sink_whose_class_says_portable_is_built_again_in_the_agent(make_tracker):
    sink = _PortableUserSink()
    tracker = make_tracker(["json", sink])
    tracker.start_run()
    tracker.log_metric("x", 1.0, 0)
    report = tracker.end_run()
    assert report.complete and sink.steps == []  # a copy in the agent process got them
    assert tracker.stats().placement == {"json": "agent", "portable_user": "agent"}
