"""Scalars on an accelerator are snapshotted without waiting for the device on the caller's thread:
CUDA for real (where this machine has a GPU), and any other device (MPS, XLA) through a tensor that
is not on the CPU as far as torch's own `is_cpu` tells."""
from __future__ import annotations

import threading

import pytest
import torch

from helpers.sinks import RecordingSink
from tracking.core.errors import InvalidMetricError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class _OnAnotherDevice(torch.Tensor):
    """A tensor that says it is not on the CPU (this machine has neither MPS nor XLA); its item()
    notes the thread that waits for it."""

    reads: list[str] = []

    @property
    def is_cpu(self) -> bool:
        return False

    def item(self):
        _OnAnotherDevice.reads.append(threading.current_thread().name)
        return super().item()


@pytest.mark.parametrize("call", ["log_metric", "log_metrics"])
def test_a_scalar_on_another_accelerator_is_read_on_the_writer_thread_as_it_was_at_the_call(make_tracker, call):
    """A subclass goes the `isinstance` way (`events._coerce_tensor`), where a real MPS or XLA tensor,
    of type `torch.Tensor` itself, goes from the C check or `coerce_value`'s first branch on `is_cpu`
    to the same `_coerce_tensor`; only a machine with such a device runs that first step."""
    sink = RecordingSink()
    tracker = make_tracker([sink])
    tracker.start_run()
    _OnAnotherDevice.reads = []
    running = torch.zeros(()).as_subclass(_OnAnotherDevice)
    for step in range(20):
        running.add_(1.0)
        if call == "log_metric":
            tracker.log_metric("running", running, step=step)
        else:
            tracker.log_metrics({"running": running, "plain": 1.0}, step=step)
        running.add_(100.0)  # in place right after the call: must not change what was logged
    assert tracker.end_run().complete
    assert [event[1]["running"] for event in sink.events] == [1.0 + 101.0 * step for step in range(20)]
    assert set(_OnAnotherDevice.reads) == {"tracking-writer"}, _OnAnotherDevice.reads


def test_a_meta_tensor_is_refused_at_the_call(make_tracker):
    tracker = make_tracker()
    tracker.start_run()
    with pytest.raises(InvalidMetricError, match="meta device"):
        tracker.log_metric("x", torch.empty((), device="meta"))


@needs_cuda
def test_logging_cuda_scalars_never_synchronises_and_keeps_call_time_values(make_tracker):
    sink = RecordingSink()
    tracker = make_tracker([sink])
    tracker.start_run()
    x = torch.randn(512, 512, device="cuda")
    running = torch.zeros((), device="cuda")
    expected = []
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call on this thread raises
    try:
        for step in range(50):
            loss = (x @ x).mean()
            running += loss
            tracker.log_metric("running", running, step=step)
            tracker.log_metrics({"loss": loss, "double": loss * 2}, step=step)
            running += 1.0  # changed in place right after the call: must not change what was logged
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    report = tracker.end_run()
    assert report.complete
    running_logged = [ev[1]["running"] for ev in sink.events if "running" in ev[1]]
    value, loss_value = 0.0, (x @ x).mean().item()
    for _ in range(50):
        value += loss_value
        expected.append(value)
        value += 1.0
    assert running_logged == pytest.approx(expected, rel=1e-4)
