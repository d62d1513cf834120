"""A real ``mlflow server`` for tests: 127.0.0.1, a free port, a sqlite backend in a temp folder.

Runs on the test's thread: the session fixture `mlflow_server` starts it once and stops it at the
end of the session. `MlflowServer.stop()` / `.start()` let a test take it away and bring it back on
the same port with the same database, for failure tests; such a test must `.start()` it again (in a
``finally``) so that the tests after it find it running.

The server runs in a process group of its own (``mlflow server`` starts uvicorn as a child), so
stopping it terminates the whole group, then kills it if it has not exited within a deadline.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["MlflowServer", "mlflow_server", "free_port"]

HOST = "127.0.0.1"
#: how long the server may take to answer /health (it imports MLflow twice and creates its db)
START_TIMEOUT_S = 90.0
#: how long it may take to exit after SIGTERM before it is killed
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.1

# Health checks go straight to 127.0.0.1: an http_proxy in the environment must not see them.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class MlflowServer:
    """One ``mlflow server`` process group; `uri` stays the same across `stop()` / `start()`."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.db_path = self.root / "mlflow.db"
        self.artifacts_dir = self.root / "mlartifacts"
        self.log_path = self.root / "server.log"
        self._proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def backend_uri(self) -> str:
        """The server's own store, for checks that bypass the server."""
        return f"sqlite:///{self.db_path}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the server (no-op if running) and wait until /health answers."""
        if self.running:
            return
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", HOST, "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", self.backend_uri,
            "--artifacts-destination", str(self.artifacts_dir),
        ]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends uvicorn with it
            )
        try:
            self._wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {self._proc.returncode} before answering "
                    f"/health; its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            try:
                with _DIRECT.open(f"{self.uri}/health", timeout=1.0) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(_POLL_S)  # polling an external process: there is no event to wait on
        raise TimeoutError(
            f"mlflow server on {self.uri} did not answer /health within {timeout_s:g} s; its log "
            f"({self.log_path}) ends with:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Terminate the server's process group; kill it if it outlives `timeout_s`.

        Returns once no process of the group is left, so that `start()` can bind the port again.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # the group this fixture created (start_new_session)
            except ProcessLookupError:
                break
            if _group_gone(proc, timeout_s):
                break
        if proc.poll() is None:
            proc.wait(timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def count_requests(self, path: str, status: int = 200) -> int:
        """How many requests to `path` the server answered with `status`, over all its starts."""
        needle = f'"POST {path} HTTP/1.1" {status}'
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except OSError:
            return 0

    def __enter__(self) -> "MlflowServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_gone(leader: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until no process is left in `leader`'s process group (the leader reaped too)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leader.poll()  # reap the leader, or it stays in the group as a zombie
        try:
            os.killpg(leader.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(_POLL_S / 2)
    return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A running ``mlflow server`` shared by the session (see the module docstring)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
