"""Shared fixtures. Servers a test needs are started by fixtures on 127.0.0.1 and stopped by them."""
from __future__ import annotations

import logging

import pytest

from tracking import Tracker


@pytest.fixture
def make_tracker(tmp_path):
    """Build trackers under tmp_path; at teardown any run left open is ended and the agents let go."""
    made: list[Tracker] = []

    def make(sinks=("json",), mode="async", **kwargs) -> Tracker:
        kwargs.setdefault("base_dir", tmp_path / "runs")
        kwargs.setdefault("end_timeout_s", 10.0)
        tracker = Tracker(sinks=list(sinks), mode=mode, **kwargs)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout_s=5.0)


@pytest.fixture(autouse=True)
def _tracking_logs(caplog):
    caplog.set_level(logging.WARNING, logger="tracking")
    yield

from mlflow_server import mlflow_server  # noqa: E402,F401 - the session's real MLflow server (tests/mlflow_server.py)
