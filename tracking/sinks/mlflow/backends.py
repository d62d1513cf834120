"""Backends: where the MLflow store (`store._Store`) runs, behind one ``call(op, *args)`` and ``stop()``.

Runs on the sink's thread (in the delivery agent, or the caller's in sync mode), one call at a time (the
sink's lock). `_InlineBackend` runs the store right there; `_HelperBackend` starts the helper
process (`helper`) and exchanges one request and its answer at a time with it over a socket pair
(`tracking.core.channel`). Either raises `MLflowSinkError`, credentials redacted, for a failed call.

Why a helper process: MLflow's sqlite store spends ~130-200 µs of pure Python per metric point
(SQLAlchemy), holding the GIL on whichever thread calls it. Measured on 2 cores with a small torch
MLP (2 layers, batch 64, 1 torch thread, ~0.3 ms/step): while the sink wrote to sqlite back to back
on a thread, training steps took 3.5-9x as long (median 5.6x); at 1,000 metrics/s, ~10% longer.
With the store in the helper, steps took as long as without logging (1.00x median). Against a server
the REST client mostly waits on the socket, and helper and thread measured alike, so servers stay on
the sink's thread by default. The helper is started by `tracking.core.spawn` running `helper.main` in a
fresh interpreter (what multiprocessing's "spawn" does, minus re-running the user's ``__main__``,
which spawn does in every script that lacks an ``if __name__ == "__main__"`` guard), and fed
pickled plain tuples over a socket pair.
"""
from __future__ import annotations

import logging
import socket
import subprocess
from typing import Any, Mapping

from ...core.channel import recv_msg, send_msg
from ...core.errors import MLflowSinkError
from ...core.spawn import SpawnError, reap, start_process
from . import helper as _helper
from .store import _describe_error, _Store
from .uri import ResolvedUri, redact_text

# Private to the package: the sink picks one of these.
__all__ = ["_InlineBackend", "_HelperBackend"]

_logger = logging.getLogger(__name__)

#: how long close() waits for the helper to exit before terminating it
_HELPER_STOP_TIMEOUT_S = 5.0



class _InlineBackend:
    """The store on the sink's thread (remote servers by default: the thread mostly waits on I/O)."""

    def __init__(self, resolved: ResolvedUri) -> None:
        self._resolved = resolved
        self._store: _Store | None = None

    def call(self, op: str, *args: Any) -> Any:
        try:
            if self._store is None:
                r = self._resolved
                self._store = _Store(r.uri, r.kind, r.artifact_location, r.redacted)
            return self._store.call(op, args)
        except Exception as exc:
            message, code, permanent = _describe_error(exc)
            error = MLflowSinkError(redact_text(message, self._resolved.uri), code, permanent)
            cause: BaseException | None = exc
        # Raised outside the except block, and chained only when the URI holds no secret: the
        # original exception (and its traceback) may quote the URI with its credentials.
        raise error from (cause if self._resolved.redacted == self._resolved.uri else None)

    def stop(self) -> None:
        """Nothing to stop: the client (and its connection pool) is kept for the next run."""


class _HelperBackend:
    """The store in a helper process; each call is a request/answer over a socket pair."""

    def __init__(self, resolved: ResolvedUri, env: Mapping[str, str], start_timeout_s: float, call_timeout_s: float | None) -> None:
        self._resolved = resolved
        self._env = dict(env)
        self._start_timeout_s = start_timeout_s
        self._call_timeout_s = call_timeout_s
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def call(self, op: str, *args: Any) -> Any:
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        # Artifact uploads may take long; MLflow's own HTTP timeouts bound them.
        timeout = None if op in ("artifact", "model") else self._call_timeout_s
        return self._exchange((op, args), timeout, what=f"the MLflow call {op!r}")

    def _exchange(self, message: Any, timeout: float | None, what: str) -> Any:
        sock = self._sock
        assert sock is not None
        try:
            sock.settimeout(timeout)
            send_msg(sock, message)
            reply = recv_msg(sock)
        except socket.timeout:
            self._kill()
            raise MLflowSinkError(
                f"{what} got no answer from the MLflow helper process within {timeout:g} s; the helper "
                "was stopped and is restarted on the next call"
            ) from None
        except (OSError, EOFError) as exc:
            code = self._kill()
            raise MLflowSinkError(
                f"the MLflow helper process exited (exit code {code}) during {what} ({exc}); it is "
                "restarted on the next call"
            ) from None
        except BaseException:
            # Interrupted (KeyboardInterrupt in sync mode) between request and answer: the answer
            # would be read as the next call's. Start afresh instead.
            self._kill()
            raise
        if reply[0] == "ok":
            return reply[1]
        _, message, code, permanent = reply
        raise MLflowSinkError(redact_text(message, self._resolved.uri), code, permanent)

    def _start(self) -> None:
        self._kill()
        parent, child = socket.socketpair()
        try:
            self._proc = start_process(
                _helper.__name__, [str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # MLflow's log lines go to stderr, which is inherited
                env=self._env,
                close_fds=True,
            )
        except SpawnError as exc:
            parent.close()
            raise MLflowSinkError(f"cannot start the MLflow helper process ({exc}); use "
                                  "MLflowSink(process=False) to run MLflow on the sink's thread") from None
        finally:
            child.close()
        self._sock = parent
        r = self._resolved
        # The URI (with any credentials) travels over the socket, not argv or the environment.
        config = {"uri": r.uri, "kind": r.kind, "artifact_location": r.artifact_location, "display_uri": r.redacted}
        self._exchange(config, self._start_timeout_s, what="starting MLflow")

    def _kill(self) -> int | None:
        """Stop the helper now (after a failure); returns its exit code."""
        proc, self._proc = self._proc, None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # the helper sees EOF and exits on its own
        if proc is None:
            return None
        return reap(proc, _HELPER_STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Ask the helper to exit, and wait for it (bounded)."""
        if self._sock is not None:
            try:
                self._sock.settimeout(_HELPER_STOP_TIMEOUT_S)
                send_msg(self._sock, None)
            except OSError:
                pass
        self._kill()

