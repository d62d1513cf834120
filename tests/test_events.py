"""Bad input gets a clear error at the call site, with a type and a message that say what to fix."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

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
        (torch.ones(3), "shape (3,)"),
        (torch.tensor(True), "torch.bool"),
        (np.ones(2), "got ndarray"),
    ],
)
def test_non_numeric_metric_values_are_refused(tracker, value, fragment):
    with pytest.raises(InvalidMetricError, match="real number|0-d tensor") as info:
        tracker.log_metric("loss", value)
    assert fragment in str(info.value)
    with pytest.raises(InvalidMetricError, match="real number|0-d tensor") as info:
        tracker.log_metrics({"ok": torch.tensor(1.0), "loss": value})
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", [torch.tensor(3), torch.tensor(3.0, dtype=torch.float64),
                                   torch.tensor([3.0]), torch.tensor(3.0, requires_grad=True) * 1,
                                   np.float32(3.0), np.int64(3), 3])
def test_numbers_and_one_element_tensors_are_logged_as_floats(make_tracker, value):
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
