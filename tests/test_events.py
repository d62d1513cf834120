"""Bad input gets a clear error at the call site, with a type and a message that say what to fix."""
from __future__ import annotations

import gc
import json

import numpy as np
import pytest

from helpers.extras import needs
from tracking import (
    ArtifactNotFoundError,
    InvalidKeyError,
    InvalidMetricError,
    InvalidNameError,
    InvalidStepError,
    Tracker,
    UnknownSinkError,
)


@pytest.fixture
def tracker(make_tracker):
    t = make_tracker(["json"])
    t.start_run()
    return t


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("abc", "got str 'abc' for key 'loss'"),
        (None, "got NoneType None"),
        ({"a": 1}, "got dict"),
        ([1.0], "got list"),
        (1 + 2j, "got complex"),
        (True, "got bool True"),
        (np.bool_(True), "log booleans as 0/1"),
        (np.ones(2), "got ndarray"),
    ],
)
def test_non_numeric_metric_values_are_refused(tracker, value, fragment):
    _refused_alone_and_beside_a_good_value(tracker, value, fragment, good=1.0)


@needs("torch")
@pytest.mark.parametrize("make, fragment", [(lambda torch: torch.ones(3), "shape (3,)"),
                                            (lambda torch: torch.tensor(True), "torch.bool")])
def test_tensors_that_are_not_one_real_number_are_refused(tracker, make, fragment):
    import torch

    _refused_alone_and_beside_a_good_value(tracker, make(torch), fragment, good=torch.tensor(1.0))


def _refused_alone_and_beside_a_good_value(tracker, value, fragment, good):
    with pytest.raises(InvalidMetricError, match="real number|0-d tensor") as info:
        tracker.log_metric("loss", value)
    assert fragment in str(info.value)
    with pytest.raises(InvalidMetricError, match="real number|0-d tensor") as info:
        tracker.log_metrics({"ok": good, "loss": value})
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", [np.float32(3.0), np.int64(3), 3])
def test_numbers_are_logged_as_floats(make_tracker, value):
    _logged_as_floats(make_tracker, value)


@needs("torch")
@pytest.mark.parametrize("make", [lambda t: t.tensor(3), lambda t: t.tensor(3.0, dtype=t.float64),
                                  lambda t: t.tensor([3.0]), lambda t: t.tensor(3.0, requires_grad=True) * 1])
def test_one_element_tensors_are_logged_as_floats(make_tracker, make):
    import torch

    _logged_as_floats(make_tracker, make(torch))


def _logged_as_floats(make_tracker, value):
    tracker = make_tracker(["json"], mode="sync")
    tracker.start_run()
    tracker.log_metrics({"a": value, "b": value}, step=0)
    tracker.log_metric("c", value, step=0)
    tracker.end_run()
    logged = json.loads((tracker.get_run_dir() / "metrics.json").read_text())
    assert logged == {"a": 3.0, "b": 3.0, "c": 3.0}
    assert all(type(v) is float for v in logged.values())


@pytest.mark.parametrize("key", ["", None, 3, ("a",)])
def test_bad_keys_are_refused(tracker, key):
    with pytest.raises(InvalidKeyError, match="non-empty str"):
        tracker.log_metric(key, 1.0)
    with pytest.raises(InvalidKeyError, match="non-empty str"):
        tracker.log_metrics({key: 1.0})
    with pytest.raises(InvalidKeyError, match="non-empty str"):
        tracker.set_tag(key, "v")


@pytest.mark.parametrize("step", [-1, 1.5, "3", True])
def test_bad_steps_are_refused(tracker, step):
    with pytest.raises(InvalidStepError, match="non-negative int"):
        tracker.log_metric("loss", 1.0, step=step)
    with pytest.raises(InvalidStepError, match="non-negative int"):
        tracker.log_metrics({"loss": 1.0}, step=step)


def test_integer_like_steps_are_accepted(tracker):
    tracker.log_metric("loss", 1.0, step=np.int64(3))


@needs("torch")
def test_an_integer_tensor_is_accepted_as_a_step(tracker):
    import torch

    tracker.log_metric("loss", 1.0, step=torch.tensor(4))


def test_metrics_must_be_a_mapping(tracker):
    with pytest.raises(TypeError, match="dict of name -> number"):
        tracker.log_metrics([("a", 1.0)])


def test_missing_artifact_is_refused(tracker, tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="not an existing file"):
        tracker.log_artifact(tmp_path / "nope.pt")
    with pytest.raises(ArtifactNotFoundError):
        tracker.log_artifact(tmp_path)  # a directory is not a file


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "a\x00b", "", "./x"])
def test_artifact_names_cannot_leave_the_run_directory(tracker, tmp_path, name):
    src = tmp_path / "f.txt"
    src.write_text("x")
    with pytest.raises(InvalidNameError):
        tracker.log_artifact(src, name)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "a\\b", "nul\x00", ".."])
def test_run_names_cannot_place_a_run_outside_the_base_dir(make_tracker, name):
    with pytest.raises(InvalidNameError):
        make_tracker().start_run(name)


def test_unknown_sink_names_the_valid_ones(tmp_path):
    with pytest.raises(UnknownSinkError, match="available: .*json.*mlflow.*tensorboard"):
        Tracker(["nope"], base_dir=tmp_path)


def test_bad_mode_policy_and_status(make_tracker, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        Tracker(["json"], mode="fast", base_dir=tmp_path)
    with pytest.raises(ValueError, match="full_queue_policy must be one of"):
        Tracker(["json"], full_queue_policy="lossy", base_dir=tmp_path)
    with pytest.raises(ValueError, match="memory_budget_bytes must be > 0"):
        Tracker(["json"], memory_budget_bytes=0, base_dir=tmp_path)
    t2 = make_tracker()
    t2.start_run()
    with pytest.raises(ValueError, match="status must be one of"):
        t2.end_run("DONE")


def test_log_figure_refuses_what_is_not_a_figure(tracker):
    with pytest.raises(TypeError, match="matplotlib Figure"):
        tracker.log_figure(object(), "x")
    with pytest.raises(ValueError, match="not a PNG"):
        tracker.log_figure(b"GIF89a", "x")


def test_a_bad_value_in_log_metrics_logs_nothing(tracker):
    with pytest.raises(InvalidMetricError):
        tracker.log_metrics({"good": 1.0, "bad": "x"}, step=0)
    tracker.flush()
    assert tracker.stats().enqueued == 0


def test_bad_values_cost_only_themselves_everywhere(tmp_path):
    """Each odd call sits between two good ones in a DualTracker run: it is refused at the call with
    our error type, and every good value reaches every sink (it once killed the worker, or made
    MLflow refuse the batch around it for good)."""
    from mlflow.tracking import MlflowClient

    from tracking import DualTracker, InvalidParamError
    from tracking.journal.rundir import read_meta

    png = tmp_path / "f.bin"
    png.write_bytes(b"x")
    tracker = DualTracker(local_base_dir=tmp_path / "runs", mlflow_tracking_uri=f"sqlite:///{tmp_path}/m.db")
    cases = [
        (InvalidStepError, lambda: tracker.log_metric("x", 1.0, step=2**64)),
        (InvalidStepError, lambda: tracker.log_metric("x", 1.0, step=2**63)),
        (InvalidStepError, lambda: tracker.log_metrics({"x": 1.0}, step=np.uint64(2**64 - 1))),
        (InvalidKeyError, lambda: tracker.log_metric("a\udc80", 1.0)),
        (InvalidKeyError, lambda: tracker.log_metrics({"a\udc80": 1.0})),
        (InvalidKeyError, lambda: tracker.set_tag("k\udc80", "v")),
        (InvalidParamError, lambda: tracker.set_tag("k", "v\udc80")),
        (InvalidParamError, lambda: tracker.log_params({"p": "a\udc80"})),
        (InvalidParamError, lambda: tracker.log_params({"nested": {"q\udc80": 1}})),
        (InvalidParamError, lambda: tracker.log_params({"p": 2**70})),
        (InvalidMetricError, lambda: tracker.log_metric("x", 10**400)),
        (InvalidMetricError, lambda: tracker.log_metrics({"x": 10**400})),
        (InvalidNameError, lambda: tracker.log_artifact(png, "a" * 300)),
        (InvalidNameError, lambda: tracker.log_figure(b"\x89PNG\r\n\x1a\n", "f" * 250)),
        (InvalidNameError, lambda: tracker.create_experiment("e\udc80")),
    ]
    try:
        with pytest.raises(InvalidNameError, match="too long for a file name"):
            tracker.start_run("r" * 300)
        run_id = tracker.start_run("bad_values")
        step = 0
        for error, call in cases:
            tracker.log_metric("good", float(step), step=step)
            with pytest.raises(error):
                call()
            step += 1
        tracker.log_metric("good", float(step), step=step)
        report = tracker.end_run()
    finally:
        tracker.close()
    assert report.complete and report.events == len(cases) + 1, report.summary()
    run_dir = tmp_path / "runs" / run_id
    assert json.load(open(run_dir / "metrics.json")) == {"good": float(len(cases))}
    history = MlflowClient(f"sqlite:///{tmp_path}/m.db").get_metric_history(read_meta(run_dir)["mlflow_run_id"], "good")
    assert sorted(m.step for m in history) == list(range(len(cases) + 1))


def test_a_value_that_breaks_while_being_journaled_costs_only_itself(make_tracker):
    """What passes the call's checks but can't be written (an object whose str() raises) is left out
    with an error logged; the writer thread lives on and the run is whole otherwise."""

    class Unprintable:
        def __str__(self):
            raise RuntimeError("no text for you")

    tracker = make_tracker(["json"])
    run_id = tracker.start_run()
    tracker.log_metric("x", 1.0, step=0)
    tracker.log_params({"obj": Unprintable()})
    tracker.log_metric("x", 2.0, step=1)
    report = tracker.end_run()
    assert report.events == 2 and report.unrecorded == 1 and not report.complete, report.summary()
    assert all(s["undelivered"] == 0 for s in report.sinks.values())
    assert json.load(open(tracker.base_dir / run_id / "metrics.json")) == {"x": 2.0}


@needs("torch")
def test_queued_metric_events_are_left_alone_by_the_garbage_collector(make_tracker):
    """An event waits up to batch_interval_s in the queue: one the GC kept tracking would reach its
    oldest generation and make it walk the user's whole heap (see tracking.recorder.capture)."""
    import torch

    tracker = make_tracker(["json"], batch_interval_s=60.0)
    tracker.start_run()
    tracker.log_metric("loss", torch.tensor(0.5), step=0)
    tracker.log_metric("lr", 1e-3)
    tracker.log_metrics({"a": 1.0, "b": 2.0}, step=1)
    tracker.log_metrics({"c": 3, "d": np.float32(4.0)}, step=1)  # the key-by-key path
    queued = list(tracker._active.writer.queue._items)
    # A collection stops tracking a tuple whose items are untracked; the inner tuples are
    # untracked by the first pass, the event by the next.
    gc.collect()
    gc.collect()
    assert len(queued) == 4 and not any(gc.is_tracked(event) for event in queued)
    assert tracker.flush()
    assert json.load(open(tracker.get_run_dir() / "metrics.json")) == {
        "loss": 0.5, "lr": 1e-3, "a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
