"""The MLflow sink against a real server behind a misbehaving proxy on 127.0.0.1: answers 503 for
a while, or answers after several seconds. Training never waits; everything arrives exactly once."""
from __future__ import annotations

import http.server
import threading
import time
import urllib.request

import pytest

from tracking import RetryPolicy
from tracking.journal.rundir import read_meta
from tracking.sinks.mlflow import MLflowSink

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FaultyProxy:
    """Forwards to `upstream`; answers 503 while `failing` is set, and waits `delay_s` first."""

    def __init__(self, upstream: str) -> None:
        self.failing = threading.Event()
        self.delay_s = 0.0
        self.refused = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                time.sleep(proxy.delay_s)
                if proxy.failing.is_set():
                    proxy.refused += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = urllib.request.Request(upstream + self.path, data=body or None, method=self.command,
                                                 headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
                try:
                    with DIRECT.open(request, timeout=30) as response:
                        status, payload = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(mlflow_server):
    p = FaultyProxy(mlflow_server.uri)
    yield p
    p.close()


def _log(tracker, steps: int) -> float:
    started = time.perf_counter()
    for step in range(steps):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "acc": step / steps}, step=step)
    return time.perf_counter() - started


def _history_steps(run_dir, uri: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    meta = read_meta(run_dir)
    return sorted(p.step for p in MlflowClient(tracking_uri=uri).get_metric_history(meta["mlflow_run_id"], key))


def test_server_answering_503_then_recovering_gets_everything_once(proxy, make_tracker, mlflow_server):
    tracker = make_tracker(["json", MLflowSink(tracking_uri=proxy.uri)], retry=RetryPolicy(initial_s=0.1, max_s=0.5))
    run_id = tracker.start_run("flaky")
    assert tracker.flush(timeout_s=60)  # opened while the server was fine
    proxy.failing.set()
    loop_s = _log(tracker, 1000)
    assert loop_s < 5, "a failing server must not slow the loop"
    deadline = time.monotonic() + 30
    while proxy.refused == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.refused > 0 and tracker.stats().undelivered["mlflow"] > 0
    flushing = time.perf_counter()
    tracker.flush(timeout_s=5)  # a sink in back-off is not waited for
    assert time.perf_counter() - flushing < 6
    proxy.failing.clear()
    report = tracker.end_run(timeout_s=60)
    assert report.complete, report.summary()
    assert report.sinks["mlflow"]["errors"] >= 1
    assert _history_steps(tracker.base_dir / run_id, mlflow_server.uri, "loss") == list(range(1000))


def test_server_answering_after_seconds_never_slows_the_loop(proxy, make_tracker, mlflow_server):
    tracker = make_tracker(["json", MLflowSink(tracking_uri=proxy.uri)])
    run_id = tracker.start_run("slow")
    proxy.delay_s = 2.0
    loop_s = _log(tracker, 1000)
    assert loop_s < 5, "a slow server must not slow the loop"
    report = tracker.end_run(timeout_s=120)
    assert report.complete, report.summary()
    assert _history_steps(tracker.base_dir / run_id, mlflow_server.uri, "acc") == list(range(1000))
