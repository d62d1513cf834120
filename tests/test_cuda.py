"""CUDA scalars are snapshotted without a device synchronisation on the caller's thread."""
from __future__ import annotations

import pytest
import torch

from helpers.sinks import RecordingSink

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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
