"""The C twins of the training process's hot paths (tracking/_speedups.c) against the Python they
stand in for: the log calls' events (`tracking.recorder.capture.metric_event` / `metrics_event`: the same
events for plain calls, None, with nothing done, for every other call, which the Python path then
checks and refuses), and the writer thread's `note_steps` (`tracking.recorder.steps`) and `all_finite`
(`tracking.journal.writer`)."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the values a training loop logs; the minimum-versions run has none

from tracking.recorder import capture as events  # noqa: E402
from tracking.recorder.capture import MAX_STEP, metric_event, metrics_event
from tracking.journal.events import SCALARS  # noqa: E402
from tracking.core.speedups import PURE_PYTHON_VARIABLE  # noqa: E402

try:
    from tracking import _speedups
except ImportError:  # not built: test_the_c_fast_path_is_built_and_used fails and says so
    _speedups = None


@pytest.fixture
def capture():
    if _speedups is None:
        pytest.skip("tracking/_speedups.c was not built")
    if events.scalar_event is metric_event:  # the pure path was asked for: the C module is compared alone
        _speedups.configure(SCALARS, events._KNOWN_KEYS)
    return _speedups


def test_the_c_fast_path_is_built_and_used_unless_the_pure_path_is_asked_for():
    # setup.py builds it as optional: an install without a compiler goes on, on the Python path.
    # Here (and in CI) it must have been built, or every test below would be skipped and every
    # benchmark would quietly measure the Python path. CI's second run asks for the pure path.
    assert _speedups is not None, "tracking/_speedups.c did not compile: reinstall (pip install -e .) and read why"
    if os.environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0"):
        assert events.scalar_event is metric_event and events.scalars_event is metrics_event
    else:
        assert events.scalar_event is _speedups.scalar_event and events.scalars_event is _speedups.scalars_event


@pytest.mark.parametrize("value, c_path", [("1", False), ("0", True), ("", True)])
def test_the_pure_path_is_taken_in_a_process_whose_environment_asks_for_it(value, c_path):
    probe = ("from tracking.recorder import capture, steps; from tracking.journal import writer; "
             "print(capture.scalar_event is not capture.metric_event, "
             "steps.note_steps.__module__ != steps.__name__, writer.all_finite.__module__ != writer.__name__)")
    done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, PURE_PYTHON_VARIABLE: value},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(c_path)] * 3


def _same_event(fast: tuple, slow: tuple, before: float, after: float) -> None:
    assert fast[:4] == slow[:4]
    assert [type(v) for v in fast[2]] == [type(v) for v in slow[2]] == [float] * len(fast[2])
    assert type(fast[3]) is type(slow[3])
    assert before <= fast[4] <= after and type(fast[4]) is float


@pytest.mark.parametrize("value", [
    0.5, float("nan"), float("inf"), -0.0, 1e308,
    torch.tensor(0.25), torch.tensor(0.25, dtype=torch.float64), torch.tensor([0.75]),
    torch.tensor(2.0, requires_grad=True) * 3, torch.tensor(0.5, dtype=torch.bfloat16),
    torch.tensor(3), torch.tensor(2**62, dtype=torch.int64), torch.tensor(7, dtype=torch.uint8),
])
@pytest.mark.parametrize("step", [None, 0, 7, MAX_STEP])
def test_a_plain_log_metric_gives_the_python_paths_event(value, step, capture):
    before = time.time()
    fast = capture.scalar_event("train/loss", value, step)
    slow = metric_event("train/loss", value, step)
    after = time.time()
    assert fast is not None
    if value != value or (isinstance(value, torch.Tensor) and value.isnan()):
        assert fast[2][0] != fast[2][0] and slow[2][0] != slow[2][0]
        fast, slow = fast[:2] + ((0.0,),) + fast[3:], slow[:2] + ((0.0,),) + slow[3:]
    _same_event(fast, slow, before, after)


@pytest.mark.parametrize("key, value, step", [
    ("", 1.0, 0), ("lösung", 1.0, 0), (b"loss", 1.0, 0), (1, 1.0, 0), (type("S", (str,), {})("a"), 1.0, 0),
    ("a", 1.0, -1), ("a", 1.0, MAX_STEP + 1), ("a", 1.0, True), ("a", 1.0, 1.0), ("a", 1.0, np.int64(3)),
    ("a", 1, 0), ("a", True, 0), ("a", np.float64(1.0), 0), ("a", np.float32(1.0), 0), ("a", "1.0", 0),
    ("a", None, 0), ("a", torch.tensor(True), 0), ("a", torch.ones(2), 0), ("a", torch.empty(0), 0),
    ("a", torch.tensor(1 + 2j), 0),
])
def test_anything_not_plain_is_left_to_the_python_path(key, value, step, capture):
    assert capture.scalar_event(key, value, step) is None


def test_a_plain_log_metrics_gives_the_python_paths_event(capture):
    metrics = {"train/a": 0.5, "train/b": float("inf"), "train/c": -1.0}
    slow = metrics_event(metrics, 3)  # the Python path learns the key set
    before = time.time()
    fast = capture.scalars_event(metrics, 3)
    after = time.time()
    assert fast is not None and fast[0] is SCALARS
    _same_event(fast, slow, before, after)


@pytest.mark.parametrize("metrics, step", [
    ({}, 0), ({"u1": 1}, 0), ({"u1": np.float64(1.0)}, 0), ({"u1": torch.tensor(1.0)}, 0),
    ({"": 1.0}, 0), ({"ü": 1.0}, 0), ({1: 1.0}, 0), ({"u1": 1.0}, -1), ({"u1": 1.0}, 2**63),
])
def test_log_metrics_not_plain_is_left_to_the_python_path(metrics, step, capture):
    assert capture.scalars_event(metrics, step) is None


def test_a_key_set_is_taken_in_c_once_the_python_path_checked_it(capture):
    metrics = {f"never_seen_before/{i}": 1.0 for i in range(4)}
    assert capture.scalars_event(metrics, 0) is None
    assert metrics_event(metrics, 0) is not None
    assert capture.scalars_event(metrics, 1) is not None


def test_a_dict_subclass_or_a_key_equal_to_a_known_one_goes_the_python_way(capture):
    known = {"sub/a": 1.0, "sub/b": 2.0}
    metrics_event(known, 0)

    class Metrics(dict):
        pass

    class Key(str):
        pass

    assert capture.scalars_event(Metrics(known), 0) is None
    assert capture.scalars_event({Key("sub/a"): 1.0, "sub/b": 2.0}, 0) is None


def test_events_share_the_key_tuple_and_hold_their_own_values(capture):
    metrics = {"share/a": 1.0, "share/b": 2.0}
    metrics_event(metrics, 0)
    first = capture.scalars_event(metrics, 0)
    metrics["share/a"] = 5.0  # the caller changes its dict after the call
    second = capture.scalars_event(metrics, 1)
    assert first[1] is second[1] == ("share/a", "share/b")
    assert first[2] == (1.0, 2.0) and second[2] == (5.0, 2.0)
    reordered = {"share/b": 2.0, "share/a": 1.0}
    assert capture.scalars_event(reordered, 2) is None  # another order is another key set, not checked yet
    metrics_event(reordered, 2)
    assert capture.scalars_event(reordered, 2)[1] == ("share/b", "share/a")


def test_events_are_left_out_of_the_garbage_collectors_walks(capture):
    metrics = {"gc/a": 1.0, "gc/b": 2.0}
    metrics_event(metrics, 0)
    for ev in (capture.scalars_event(metrics, 0), capture.scalar_event("gc/a", torch.tensor(1.0), None)):
        assert not any(gc.is_tracked(part) for part in (ev, ev[1], ev[2]))


def test_threads_logging_their_own_key_sets_get_their_own_keys(capture):
    sets = [{f"t{t}/k{k}": float(k) for k in range(3 + t)} for t in range(4)]
    for metrics in sets:
        metrics_event(metrics, 0)
    wrong: list[tuple] = []

    def log(metrics: dict) -> None:
        for step in range(20000):
            ev = capture.scalars_event(metrics, step)
            if ev is None or ev[1] != tuple(metrics) or ev[2] != tuple(metrics.values()) or ev[3] != step:
                wrong.append(ev)

    threads = [threading.Thread(target=log, args=(m,)) for m in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_wrong_arity_is_a_type_error(capture):
    with pytest.raises(TypeError, match="scalar_event"):
        capture.scalar_event("a", 1.0)
    with pytest.raises(TypeError, match="scalars_event"):
        capture.scalars_event({})


# -- the writer thread's two: note_steps (tracking.recorder.steps) and all_finite (tracking.journal.writer) --

def _scalars(keys: tuple, step, values=(1.0,)) -> tuple:
    return (SCALARS, keys, tuple(values) * len(keys) if len(values) == 1 else tuple(values), step, 1.0)


def test_note_steps_keeps_the_highest_step_of_each_key_set_as_the_python_loop_does(capture):
    import random

    from tracking.recorder.steps import StepResolver

    rng = random.Random(7)
    key_sets = [("a",), ("a", "b"), ("b", "c", "d"), ("z",)]
    batch = [_scalars(rng.choice(key_sets), rng.randrange(0, 50)) for _ in range(500)]
    seen: dict = {}
    assert capture.note_steps(list(batch), seen, 1024) is True
    python = StepResolver()
    import tracking.recorder.steps as steps

    fast, steps.note_steps = steps.note_steps, lambda *_: False  # the Python loop alone
    try:
        assert python.resolve_all(list(batch), lambda e: e) == batch
    finally:
        steps.note_steps = fast
    assert seen == python._seen == {k: max(e[3] for e in batch if e[1] == k) for k in key_sets}


@pytest.mark.parametrize("odd", [
    (SCALARS, ("a",), (1.0,), None, 1.0),  # a step to assign: the Python path's
    ("metrics", {"a": 1.0}, 3, 1.0),
    ("tag", "k", "v", 1.0),
    (SCALARS, ("a",), (1.0,), True, 1.0),
])
def test_note_steps_leaves_any_other_batch_to_the_python_loop(capture, odd):
    assert capture.note_steps([_scalars(("a",), 1), odd], {}, 1024) is False


def test_note_steps_stops_before_seen_grows_past_its_limit_and_the_python_loop_folds(capture):
    from tracking.recorder.steps import StepResolver

    resolver = StepResolver()
    batch = [_scalars((f"k{i}",), i) for i in range(StepResolver._MAX_SEEN + 5)]
    assert capture.note_steps(list(batch), {}, StepResolver._MAX_SEEN) is False
    resolver.resolve_all(list(batch), lambda e: e)
    assert resolver.resolve((SCALARS, ("k3",), (1.0,), None, 1.0))[3] == 4  # one past k3's highest step


@pytest.mark.parametrize("values, finite", [
    ((1.0, -2.5, 1e308), True), ((float("nan"),), False), ((1.0, float("inf")), False), ((float("-inf"),), False),
])
def test_all_finite_finds_nan_and_inf(capture, values, finite):
    assert capture.all_finite([_scalars(("a",), 0), _scalars(tuple("abc"[:len(values)]), 1, values)]) is finite


def test_all_finite_says_false_for_a_batch_it_cannot_vouch_for(capture):
    assert capture.all_finite([_scalars(("a",), 0), ("tag", "k", "v", 1.0)]) is False
    assert capture.all_finite([]) is True


def test_a_batch_with_nan_still_reads_back_as_nan(tmp_path, capture):
    from tracking.journal import JournalWriter, read_journal

    writer = JournalWriter(tmp_path, {"run_id": "r"})
    writer.append([_scalars(("a",), 0), _scalars(("a", "b"), 1, (float("nan"), float("-inf")))])
    writer.close("FINISHED")
    values = [ev.values for _, ev in read_journal(tmp_path).events]
    assert values[0] == {"a": 1.0} and values[1]["a"] != values[1]["a"] and values[1]["b"] == float("-inf")
