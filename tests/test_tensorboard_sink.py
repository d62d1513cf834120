"""Tests of the TensorBoard sink, read back with TensorBoard's own readers from real event files.

Everything runs on the test's thread: the sink is called directly, as the worker would call it,
except in the end-to-end tests at the bottom, which go through a real `Tracker`.
"""
from __future__ import annotations

import ctypes
import errno
import io
import math
import os
import struct
import time
from pathlib import Path

import pytest

pytest.importorskip("tensorboardX")
pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.util import tensor_util

from tracking.journal.events import ARTIFACT, EXPERIMENT, FIGURE, METRICS, PARAMS, TAG
from tracking.sinks import resolve_sink
from tracking.sinks.base import PermanentSinkError, RunContext, Sink
from tracking.sinks.tensorboard import TensorBoardSink, event_file, records
from tracking.sinks.tensorboard import sink as tb_sink

KEYS = [f"train/metric_{i}" for i in range(10)]
STORE_ALL = {kind: 0 for kind in event_accumulator.DEFAULT_SIZE_GUIDANCE}
T0 = 1_700_000_000.25


# -- helpers -------------------------------------------------------------------------------------------

def make_run(base: Path, run_id: str = "r1", config: dict | None = None) -> RunContext:
    run_dir = base / run_id
    run_dir.mkdir(parents=True)
    return RunContext(
        run_id=run_id, run_name=run_id, run_dir=run_dir, experiment="e",
        config={"lr": 0.001} if config is None else config, start_time=time.time(), mode="async",
    )


def accumulate(run_dir: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance=STORE_ALL)
    return acc.Reload()


def raw_events(run_dir: Path) -> list:
    """Every Event in the run's event files, as TensorBoard's loader parses them (unconverted)."""
    files = sorted((Path(run_dir) / "tensorboard").glob("events.out.tfevents.*"))
    return [event for path in files for event in event_file_loader.LegacyEventFileLoader(str(path)).Load()]


def float32(value: float) -> float:
    return ctypes.c_float(value).value


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def metric_events(steps: range, keys=KEYS) -> list[tuple]:
    """10 values a step, with NaN, ±inf and a beyond-float32 value sprinkled in."""
    events = []
    for step in steps:
        values = {key: step * 0.5 + i / 7 for i, key in enumerate(keys)}
        if step % 5 == 1:
            values[keys[0]] = math.nan
        if step % 5 == 2:
            values[keys[-1]] = math.inf
        if step % 5 == 3:
            values[keys[1]] = -math.inf
        if step % 5 == 4:
            values[keys[2]] = 1e39  # float32 has no such value: TensorBoard shows inf, as protobuf does
        events.append((METRICS, values, step, T0 + step))
    return events


def png(width: int, height: int) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 50, height / 50), dpi=50)
    fig.add_subplot().plot([0, 1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    return buffer.getvalue()


def text_of(acc: event_accumulator.EventAccumulator, tag: str) -> list[tuple[int, str]]:
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto).item().decode()) for e in acc.Tensors(tag)]


@pytest.fixture
def sink():
    made = TensorBoardSink()
    yield made
    made.close("FINISHED")


def assert_scalars_match(acc, events: list[tuple]) -> None:
    expected: dict[str, list[tuple[int, float, float]]] = {}
    for _, values, step, ts in events:
        for key, value in values.items():
            expected.setdefault(key, []).append((step, float32(value), ts))
    assert sorted(acc.Tags()["scalars"]) == sorted(expected)
    for key, points in expected.items():
        got = [(e.step, e.value, e.wall_time) for e in acc.Scalars(key)]
        assert len(got) == len(points), key
        for (step, value, ts), (g_step, g_value, g_ts) in zip(points, got):
            assert (g_step, g_ts) == (step, ts) and same(g_value, value), (key, step, g_value, value)


# -- scalars -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 3, 1000], ids=["one-by-one", "small-batches", "one-batch"])
def test_every_tag_step_and_value_reads_back_including_nan_and_inf(tmp_path, sink, batch_size):
    run = make_run(tmp_path)
    events = metric_events(range(0, 60)) + metric_events(range(200, 230))  # steps of 1 and 2 varint bytes
    sink.open(run)
    for i in range(0, len(events), batch_size):
        sink.write(events[i:i + batch_size])
    sink.close("FINISHED")

    assert_scalars_match(accumulate(run.run_dir), events)


def test_values_logged_at_one_step_in_several_events_share_one_event(tmp_path, sink):
    run = make_run(tmp_path)
    sink.open(run)
    sink.write([
        (METRICS, {"loss": 1.0}, 5, T0),
        (METRICS, {"acc": 0.5, "lr": 0.1}, 5, T0 + 1),
        (METRICS, {"loss": 0.5}, 6, T0 + 2),
    ])
    sink.flush()

    events = raw_events(run.run_dir)
    scalar_events = [e for e in events if e.summary.value and e.summary.value[0].HasField("simple_value")]
    assert [(e.step, e.wall_time, [v.tag for v in e.summary.value]) for e in scalar_events] == [
        (5, T0, ["loss", "acc", "lr"]),
        (6, T0 + 2, ["loss"]),
    ]


def test_steps_that_go_back_keep_their_logged_order(tmp_path, sink):
    run = make_run(tmp_path)
    sink.open(run)
    sink.write([
        (METRICS, {"loss": 1.0}, 5, T0),
        (METRICS, {"loss": 0.9}, 6, T0 + 1),
        (METRICS, {"acc": 0.5}, 5, T0 + 2),  # only consecutive events at one step share an Event
    ])
    sink.flush()

    events = raw_events(run.run_dir)
    scalar_events = [e for e in events if e.summary.value and e.summary.value[0].HasField("simple_value")]
    assert [(e.step, [v.tag for v in e.summary.value]) for e in scalar_events] == [
        (5, ["loss"]), (6, ["loss"]), (5, ["acc"]),
    ]


def test_scalar_records_are_byte_identical_to_protobuf():
    from tensorboardX.proto import event_pb2, summary_pb2
    from tensorboardX.record_writer import masked_crc32c

    long_keys = [f"group_{i}/" + "x" * (i * 13) for i in range(12)]  # multi-byte length fields
    edges = [math.nan, math.inf, -math.inf, 1e39, -1e39, 3.4028235e38, 3.4028236e38, 5e-324, 0.0, -0.0]
    cases = [
        (T0, 0, dict(zip(KEYS, edges))),  # step 0 and 0.0 values: proto3 leaves defaults out, not oneofs
        (T0 + 1, 1, {"loss": 0.5}, {"acc": 0.25, "lr": 1e-3}),  # two events at one step: one Event
        (T0 + 2, 300, {k: i * 0.1 for i, k in enumerate(long_keys)}),
        (0.0, 2**40, {"loss": 1.0}),
        (-0.0, 7, {"loss": 1.0}),
        (T0 + 3, 8, {"big": -1e39}),  # one key (log_metric's event) beyond float32: -inf, as protobuf
    ]
    for wall_time, step, *values in cases:
        message = event_pb2.Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=k, simple_value=v) for vs in values for k, v in vs.items()
        ])).SerializeToString()
        header = struct.pack("<Q", len(message))
        record = b"".join([  # framed as tensorboardX's RecordWriter frames it
            header, struct.pack("<I", masked_crc32c(header)),
            message, struct.pack("<I", masked_crc32c(message)),
        ])
        assert records._scalar_record(wall_time, step, *values) == record, (step, values)


def test_without_the_extra_the_sink_names_what_to_install(monkeypatch):
    monkeypatch.setattr(tb_sink, "_MISSING", ImportError("No module named 'crc32c'"))
    with pytest.raises(ImportError, match=r"crc32c.*pip install 'batteryml-tracking\[tensorboard\]'"):
        TensorBoardSink()


# -- figures, config, tags -----------------------------------------------------------------------------

def test_figure_becomes_an_image_of_its_png_size_at_the_latest_step(tmp_path, sink):
    run = make_run(tmp_path)
    image = png(100, 50)
    (run.run_dir / "figures").mkdir()
    (run.run_dir / "figures" / "curve.png").write_bytes(image)
    sink.open(run)
    sink.write([
        (FIGURE, "early", image, T0),  # before any metrics: step 0; PNG bytes are accepted too
        (METRICS, {"loss": 1.0}, 7, T0 + 1),
        (FIGURE, "curve", str(run.run_dir / "figures" / "curve.png"), T0 + 2),
    ])
    sink.write([(FIGURE, "curve", "figures/curve.png", T0 + 3)])  # relative to the run directory
    sink.close("FINISHED")

    acc = accumulate(run.run_dir)
    assert sorted(acc.Tags()["images"]) == ["curve", "early"]
    assert [(e.step, e.width, e.height, e.wall_time) for e in acc.Images("curve")] == [
        (7, 100, 50, T0 + 2), (7, 100, 50, T0 + 3),
    ]
    assert acc.Images("curve")[0].encoded_image_string == image
    assert [e.step for e in acc.Images("early")] == [0]


def test_a_figure_that_is_not_a_png_is_refused_for_good_after_the_rest_is_written(tmp_path, sink):
    run = make_run(tmp_path)
    sink.open(run)
    with pytest.raises(PermanentSinkError, match="'broken' is not a PNG"):
        sink.write([(METRICS, {"loss": 1.0}, 1, T0), (FIGURE, "broken", b"GIF89a...", T0)])
    sink.flush()

    acc = accumulate(run.run_dir)
    assert [e.value for e in acc.Scalars("loss")] == [1.0]
    assert acc.Tags()["images"] == []


def test_config_shows_as_a_markdown_table_of_flattened_keys(tmp_path, sink):
    run = make_run(tmp_path, config={"model": {"hidden": 64, "act": "relu"}, "lr": 0.001, "note": "a|b"})
    sink.open(run)
    sink.close("FINISHED")

    acc = accumulate(run.run_dir)
    assert acc.SummaryMetadata("config").plugin_data.plugin_name == "text"
    [(step, text)] = text_of(acc, "config")
    assert step == 0
    assert text.splitlines() == [
        "| key | value |", "| --- | --- |",
        "| model.hidden | 64 |", "| model.act | relu |", "| lr | 0.001 |", "| note | a\\|b |",
    ]


def test_params_rewrite_the_config_text_at_the_latest_step(tmp_path, sink):
    run = make_run(tmp_path, config={"lr": 0.001})
    sink.open(run)
    sink.write([(METRICS, {"loss": 1.0}, 3, T0), (PARAMS, {"batch": 32}, T0), (PARAMS, {"lr": 0.01}, T0)])
    sink.close("FINISHED")

    texts = text_of(accumulate(run.run_dir), "config")
    assert [step for step, _ in texts] == [0, 3]  # one config text per batch, however many PARAMS
    assert "| lr | 0.01 |" in texts[1][1] and "| batch | 32 |" in texts[1][1]


def test_tags_show_as_text_under_tags_prefix(tmp_path, sink):
    run = make_run(tmp_path)
    sink.open(run)
    sink.write([(METRICS, {"loss": 1.0}, 4, T0), (TAG, "phase", "warmup", T0)])
    sink.close("FINISHED")

    assert text_of(accumulate(run.run_dir), "tags/phase") == [(4, "warmup")]


def test_artifact_and_experiment_events_write_nothing(tmp_path, sink):
    run = make_run(tmp_path, config={})
    sink.open(run)
    before = len(raw_events(run.run_dir))
    sink.write([(ARTIFACT, "model.pt", str(run.run_dir / "model.pt"), T0), (EXPERIMENT, "other", T0)])
    sink.flush()

    assert len(raw_events(run.run_dir)) == before == 1  # the file-version event alone


# -- files and lifecycle -------------------------------------------------------------------------------

def test_flush_makes_everything_written_visible(tmp_path):
    sink = TensorBoardSink(flush_interval_s=3600.0)
    run = make_run(tmp_path)
    sink.open(run)
    events = metric_events(range(20))
    sink.write(events)
    assert accumulate(run.run_dir).Tags()["scalars"] == []  # held in memory until the interval is up

    sink.flush()
    assert_scalars_match(accumulate(run.run_dir), events)
    sink.close("FINISHED")


def test_open_close_open_writes_each_run_to_its_own_directory(tmp_path):
    sink = TensorBoardSink()
    first, second = make_run(tmp_path, "r1"), make_run(tmp_path, "r2", config={"lr": 0.5})
    sink.open(first)
    sink.write([(METRICS, {"loss": 1.0}, 1, T0)])
    sink.close("FINISHED")
    sink.open(second)
    sink.write([(METRICS, {"acc": 0.9}, 2, T0)])
    sink.close("FAILED")

    assert [e.value for e in accumulate(first.run_dir).Scalars("loss")] == [1.0]
    acc = accumulate(second.run_dir)
    assert acc.Tags()["scalars"] == ["acc"]
    assert "| lr | 0.5 |" in text_of(acc, "config")[0][1]


def test_close_twice_is_harmless(tmp_path):
    sink = TensorBoardSink()
    sink.open(make_run(tmp_path))
    sink.close("FINISHED")
    sink.close("FINISHED")


def test_a_failed_write_is_undone_so_the_retry_adds_no_duplicate(tmp_path, monkeypatch):
    sink = TensorBoardSink(flush_interval_s=0.0)  # every write goes to the file at once
    real_write, calls = os.write, []

    def half_then_disk_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    run = make_run(tmp_path)
    sink.open(run)
    monkeypatch.setattr(event_file.os, "write", half_then_disk_full)
    events = metric_events(range(30))
    with pytest.raises(OSError):
        sink.write(events)
    sink.write(events)  # what the worker does: the same call again
    sink.close("FINISHED")

    assert_scalars_match(accumulate(run.run_dir), events)


def test_multiplexer_shows_each_run_under_its_run_id(tmp_path):
    base = tmp_path / "runs"
    for run_id, loss in [("a_20250101_000000_aaaaaa", 1.0), ("b_20250101_000001_bbbbbb", 2.0)]:
        sink = TensorBoardSink()
        sink.open(make_run(base, run_id))
        sink.write([(METRICS, {"loss": loss}, 1, T0)])
        sink.close("FINISHED")

    mux = EventMultiplexer(size_guidance=STORE_ALL)
    mux.AddRunsFromDirectory(str(base))
    mux.Reload()

    run_a, run_b = "a_20250101_000000_aaaaaa/tensorboard", "b_20250101_000001_bbbbbb/tensorboard"
    assert sorted(mux.Runs()) == [run_a, run_b]
    first_loss = {run: mux.Tensors(run, "loss")[0].tensor_proto for run in (run_a, run_b)}
    loss = {run: tensor_util.make_ndarray(proto).item() for run, proto in first_loss.items()}
    assert loss == {run_a: 1.0, run_b: 2.0}


def test_is_a_sink_found_by_its_name():
    sink = resolve_sink("tensorboard")
    assert isinstance(sink, TensorBoardSink) and isinstance(sink, Sink) and sink.name == "tensorboard"


# -- end to end, through the tracker -------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["async", "sync"])
def test_tracker_run_reads_back_as_logged(make_tracker, mode):
    from matplotlib.figure import Figure

    tracker = make_tracker(sinks=("json", "tensorboard"), mode=mode)
    tracker.start_run("e2e", config={"optim": {"lr": 0.01}})
    logged: dict[str, list[tuple[int, float]]] = {}
    for step in range(50):
        values = {key: step + i / 3 for i, key in enumerate(KEYS)}
        if step == 7:
            values[KEYS[0]] = math.nan
        tracker.log_metrics(values, step=step)
        for key, value in values.items():
            logged.setdefault(key, []).append((step, value))
    for value in (0.3, 0.2, math.inf):  # no step: 0, 1, 2 for this key
        tracker.log_metric("val/loss", value)
    logged["val/loss"] = [(0, 0.3), (1, 0.2), (2, math.inf)]
    fig = Figure(figsize=(2, 1), dpi=50)
    fig.add_subplot().plot([1, 2])
    tracker.log_figure(fig, "curve")
    tracker.end_run()

    acc = accumulate(tracker.get_run_dir())
    assert sorted(acc.Tags()["scalars"]) == sorted(logged)
    for key, points in logged.items():
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [step for step, _ in got] == [step for step, _ in points], key
        assert all(same(g_value, float32(value)) for (_, g_value), (_, value) in zip(got, points)), key
    [image] = acc.Images("curve")
    assert (image.width, image.height) == (100, 50)
    assert "| optim.lr | 0.01 |" in text_of(acc, "config")[0][1]


def test_a_forked_child_reopening_the_sink_leaves_the_parents_pending_records_to_the_parent(tmp_path):
    """A DataLoader-style fork while records wait in memory: the child's open() for its own run
    must not write them into the parent's file (they would appear twice)."""
    sink = TensorBoardSink(flush_interval_s=3600)  # records stay pending until flush()
    run = make_run(tmp_path)
    sink.open(run)
    sink.write([(METRICS, {"loss": 0.5}, 1, T0), (METRICS, {"loss": 0.25}, 2, T0 + 1)])
    pid = os.fork()
    if pid == 0:
        try:
            sink.open(make_run(tmp_path, "child"))
            sink.close("FINISHED")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    sink.close("FINISHED")
    steps = [e.step for e in raw_events(run.run_dir) if e.summary.value and e.summary.value[0].HasField("simple_value")]
    assert steps == [1, 2]
