"""The MLflow sink: a run's config, params, tags, metrics, artifacts and figures as one MLflow run.

Runs on the worker (or on the caller's thread in sync mode), as every sink; see `tracking.sinks.base`.
With ``process=True`` (the default for sqlite and file stores) MLflow itself runs in a helper
process, `_helper_main`, and the sink's thread only turns events into plain tuples and waits for
the helper's answer; otherwise MLflow runs on the sink's thread.

Why a helper process: MLflow's sqlite store spends ~130-200 µs of pure Python per metric point
(SQLAlchemy), holding the GIL on whichever thread calls it. Measured on 2 cores with a small torch
MLP (2 layers, batch 64, 1 torch thread, ~0.3 ms/step): while the sink wrote to sqlite back to back
on a thread, training steps took 3.5-9x as long (median 5.6x); at 1,000 metrics/s, ~10% longer.
With the store in the helper, steps took as long as without logging (1.00x median). Against a server
the REST client mostly waits on the socket, and helper and thread measured alike, so servers stay on
the sink's thread by default. The helper is started by `open` and stopped by `close`; `write`
returns when the helper has answered, so delivery semantics are the same in both modes. It is
started with ``subprocess`` running this module's `_helper_main` in a fresh interpreter (what
multiprocessing's "spawn" does, minus re-running the user's ``__main__``, which spawn does in every
script that lacks an ``if __name__ == "__main__"`` guard), and fed pickled plain tuples over a
socket pair.

What MLflow gets:

- ``open``: the experiment (``experiment_name`` or the run's; created when missing, with
  ``run.experiments``), a run named ``run.run_name`` tagged ``tracking.run_id`` / ``tracking.run_dir``
  (an existing run with that tag, or ``mlflow_run_id`` from ``run.resume``, is continued instead),
  and the config flattened with "." as params (``model.hidden_dims``).
- ``write``: PARAMS flattened the same way; TAG as tags; METRICS as metric points with their steps
  and timestamps (ms); ARTIFACT under its name (sub-folders kept); FIGURE under ``figures/``;
  EXPERIMENT creates that experiment. Requests respect MLflow's limits: at most 1,000 metrics,
  100 params, 100 tags and 1,000 entities per ``log_batch``, and about 1 MB of JSON.
- ``close``: the run's status (``set_terminated``).

What MLflow refuses is fixed here, each kind with a single `MLflowSinkWarning` per sink (the local
files keep the original): keys outside ``[/\\w.\\- ]`` or not a clean relative path (``_``), keys
over 250 characters (cut, with a hash to keep them apart), param values over 6,000 and tag values
over 8,000 characters (truncated), and a param logged again with another value (MLflow params are
immutable: the first value stays). NaN and ±inf are sent as they are: every MLflow store accepts
them; SQL stores keep NaN and store ±inf as ±1.8e308 (MLflow's own mapping).

Failures: any MLflow error is raised as `MLflowSinkError` (credentials redacted from the message),
which the worker retries with back-off; the requests of a batch that MLflow already accepted are not
sent again on the retry. A request MLflow can never accept (its error code says so) is skipped, the
rest of the batch is still sent, and `write` then raises `PermanentSinkError`. HTTP calls are bounded
(``http_timeout_s``, ``http_max_retries``) so that a server that is down makes a call fail within a
few seconds instead of MLflow's default of 7 retries with 120 s timeouts; the worker's own back-off
takes it from there.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..events import ARTIFACT, EXPERIMENT, FIGURE, METRICS, PARAMS, TAG
from ..mlflow_uri import ResolvedUri, redact_text, resolve_tracking_uri
from ..redact import DEFAULT_SECRET_KEY_PATTERNS, MASK, is_secret_key, redact_config
from .base import PermanentSinkError, RunContext

__all__ = ["MLflowSink", "MLflowSinkError", "MLflowSinkWarning"]

_logger = logging.getLogger(__name__)

#: how much lower the helper process's scheduling priority is than the training process's
_HELPER_NICENESS = 10

# MLflow's limits on one log_batch request (mlflow.utils.validation).
MAX_METRICS_PER_REQUEST = 1000
MAX_PARAMS_PER_REQUEST = 100
MAX_TAGS_PER_REQUEST = 100
MAX_ENTITIES_PER_REQUEST = 1000
#: the JSON body budget per request: MLflow documents ~1 MB (and proxies in front of servers often
#: cap bodies at 1 MiB); 10% is left for the envelope and for estimates that run short
MAX_REQUEST_BYTES = 900_000
MAX_KEY_CHARS = 250
MAX_PARAM_VALUE_CHARS = 6000
MAX_TAG_VALUE_CHARS = 8000

#: JSON bytes of one metric besides its key: {"key":"","value":-1.7976931348623157e+308,
#: "timestamp":"1700000000000","step":"9223372036854775807"} plus separators
_METRIC_FIXED_BYTES = 100
#: JSON bytes of one param or tag besides its key and value
_ENTITY_FIXED_BYTES = 30

#: the MLflow tags that tie an MLflow run to the local run
TAG_RUN_ID = "tracking.run_id"
TAG_RUN_DIR = "tracking.run_dir"
#: where FIGURE events go in the run's artifacts
FIGURES_ARTIFACT_DIR = "figures"

#: MLflow error codes that mean "this request will never be accepted"; any other error is transient
_PERMANENT_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST",
    "MALFORMED_REQUEST",
})

#: keys MLflow accepts on every platform (it also allows ':' except on Windows)
_KEY_BAD_CHARS = re.compile(r"[^/\w.\- ]")
#: sanitised keys remembered per sink; a run that invents keys without end must not grow memory
_KEY_CACHE_MAX = 100_000

#: MLflow's HTTP defaults are 7 retries with back-off and 120 s timeouts (minutes per failing call)
DEFAULT_HTTP_TIMEOUT_S = 10
DEFAULT_HTTP_MAX_RETRIES = 2
DEFAULT_HTTP_BACKOFF_FACTOR_S = 1
#: how long the helper may take to start (import MLflow, create the database) before open fails
DEFAULT_START_TIMEOUT_S = 120.0
#: how long one call into the helper may take (artifact uploads excepted) before it is restarted
DEFAULT_CALL_TIMEOUT_S = 300.0
#: how long close() waits for the helper to exit before terminating it
_HELPER_STOP_TIMEOUT_S = 5.0


class MLflowSinkError(RuntimeError):
    """An MLflow call failed; the message has credentials redacted. Transient unless `permanent`."""

    def __init__(self, message: str, error_code: str | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.permanent = permanent


class MLflowSinkWarning(UserWarning):
    """Something logged was changed to fit MLflow (shown once per kind per sink)."""


# ---------------------------------------------------------------------------------------------
# Encoding: events -> plain requests within MLflow's limits (the sink's thread)
# ---------------------------------------------------------------------------------------------

def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """("model.hidden_dims", [64, 32]) pairs from nested mappings; lists and empty dicts are values."""
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _json_len(text: str) -> int:
    # Exact: requests sends MLflow's bodies as json.dumps output (ASCII-escaped).
    return len(json.dumps(text))


def _clean_path(key: str) -> str:
    """`key` as MLflow wants it: a normalised relative path (no '', '.', '..' parts, no leading '/')."""
    parts = [("__" if part == ".." else part) for part in key.split("/") if part not in ("", ".")]
    cleaned = "/".join(parts) or "_"
    if cleaned.startswith(".."):
        cleaned = "_" + cleaned[1:]
    return cleaned


class _Encoder:
    """Turns events into MLflow requests (plain tuples) and fixes what MLflow would refuse."""

    def __init__(self, warn_once: Any) -> None:
        self._warn_once = warn_once
        self._keys: dict[str, str] = {}
        #: JSON bytes of the longest metric seen (sizes metric chunks without per-point accounting)
        self._metric_bytes = _METRIC_FIXED_BYTES + 2
        #: params MLflow holds for the current run: immutable there, so a new value is skipped
        self.params: dict[str, str] = {}
        #: keys whose values are masked before they are sent (set from the run at open)
        self.secret_patterns: tuple[str, ...] = DEFAULT_SECRET_KEY_PATTERNS

    def start_run(self, existing_params: Mapping[str, str]) -> None:
        self.params = dict(existing_params)

    # -- keys and values ------------------------------------------------------------------------

    def key(self, key: str) -> str:
        fixed = self._keys.get(key)
        if fixed is None:
            fixed = self._fix_key(key)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[key] = fixed
            self._metric_bytes = max(self._metric_bytes, _METRIC_FIXED_BYTES + _json_len(fixed))
        return fixed

    def _fix_key(self, key: str) -> str:
        fixed = _clean_path(_KEY_BAD_CHARS.sub("_", key))
        if fixed != key:
            self._warn_once(
                "key_chars",
                f"MLflow keys may only contain letters, digits, '_', '-', '.', ' ' and '/' (as a "
                f"relative path): {key!r} is logged to MLflow as {fixed!r}, and keys like it likewise "
                f"(the local files keep the original keys)",
            )
        if len(fixed) > MAX_KEY_CHARS:
            digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            short = fixed[: MAX_KEY_CHARS - 9] + "_" + digest
            self._warn_once(
                "key_length",
                f"MLflow keys are limited to {MAX_KEY_CHARS} characters: a {len(fixed)}-character key "
                f"({fixed[:40]!r}...) is logged to MLflow as {short!r} (its start and a hash), and "
                f"longer keys likewise (the local files keep the original keys)",
            )
            fixed = short
        return fixed

    def _truncate(self, kind: str, key: str, text: str, limit: int) -> str:
        if len(text) <= limit:
            return text
        self._warn_once(
            f"{kind}_length",
            f"MLflow {kind} values are limited to {limit} characters: {kind} {key!r} "
            f"({len(text)} characters) is truncated in MLflow, and longer values likewise "
            f"(the local files keep the full value)",
        )
        return text[:limit]

    def param_pairs(self, params: Mapping[str, Any], into: dict[str, str]) -> None:
        """Add `params` (flattened, as text, secrets masked) to `into`, skipping what MLflow holds."""
        held = self.params
        for raw_key, value in _flatten(redact_config(params, self.secret_patterns)):
            key = self.key(raw_key)
            text = self._truncate("param", key, value if type(value) is str else str(value), MAX_PARAM_VALUE_CHARS)
            old = held.get(key)
            if old is None:
                held[key] = into[key] = text
            elif old != text:
                self.warn_param_changed(key, old, text)

    def warn_param_changed(self, key: str, old: str, new: str) -> None:
        self._warn_once(
            "param_changed",
            f"MLflow params cannot change once logged: {key!r} stays {old[:80]!r} in MLflow "
            f"(the new value {new[:80]!r} is kept in the local files); log values that change as "
            f"metrics or tags (warned once)",
        )

    # -- events -> requests ---------------------------------------------------------------------

    def encode(self, events: Sequence[tuple]) -> list[tuple]:
        """The requests for `events`, in the order to send them: experiments, batches, files."""
        experiments: list[tuple] = []
        files: list[tuple] = []
        rows: list[tuple] = []
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        keys = self._keys
        append = rows.append
        for event in events:
            kind = event[0]
            if kind == METRICS:
                # The hot loop: a dict lookup and a tuple per point (MLflow's Metric objects are
                # built where MLflow runs, from these tuples).
                _, values, step, ts = event
                ms = int(ts * 1000)
                for key, value in values.items():
                    fixed = keys.get(key)
                    if fixed is None:
                        fixed = self.key(key)
                    append((fixed, value, ms, step))
            elif kind == PARAMS:
                self.param_pairs(event[1], params)
            elif kind == TAG:
                key = self.key(event[1])
                tags.pop(key, None)  # the last value wins, as it would one request at a time
                value = MASK if is_secret_key(event[1], self.secret_patterns) else str(event[2])
                tags[key] = self._truncate("tag", key, value, MAX_TAG_VALUE_CHARS)
            elif kind == ARTIFACT:
                files.append(("artifact", event[2], event[1]))
            elif kind == FIGURE:
                files.append(("artifact", event[2], _figure_name(event[1], event[2])))
            elif kind == EXPERIMENT:
                experiments.append(("experiment", event[1]))
            else:
                _logger.debug("mlflow sink: ignoring an event of unknown kind %r", kind)
        return experiments + self.batches(rows, list(params.items()), list(tags.items())) + files

    def batches(self, rows: list[tuple], params: list[tuple], tags: list[tuple]) -> list[tuple]:
        """("batch", metrics, params, tags) requests within MLflow's count and size limits."""
        ops: list[tuple] = []
        next_metric = next_param = next_tag = 0
        while next_param < len(params) or next_tag < len(tags) or next_metric < len(rows):
            budget = MAX_REQUEST_BYTES
            param_chunk, next_param, budget = _take(params, next_param, MAX_PARAMS_PER_REQUEST, budget, True)
            tag_chunk, next_tag, budget = _take(tags, next_tag, MAX_TAGS_PER_REQUEST, budget, not param_chunk)
            room = min(
                MAX_METRICS_PER_REQUEST,
                MAX_ENTITIES_PER_REQUEST - len(param_chunk) - len(tag_chunk),
                budget // self._metric_bytes,
            )
            if room <= 0 and not param_chunk and not tag_chunk:
                room = 1  # never loop without progress
            metric_chunk = rows[next_metric:next_metric + room]
            next_metric += len(metric_chunk)
            ops.append(("batch", metric_chunk, param_chunk, tag_chunk))
        return ops


def _take(items: list[tuple], start: int, limit: int, budget: int, first: bool) -> tuple[list[tuple], int, int]:
    """Up to `limit` (key, text) pairs from `start` that fit `budget` JSON bytes.

    `first`: take one even if it does not fit (the request holds nothing else yet; one param or tag
    is at most ~100 kB of JSON, so it always fits a request of its own).
    """
    end = start
    stop = min(len(items), start + limit)
    while end < stop:
        key, text = items[end]
        size = _ENTITY_FIXED_BYTES + _json_len(key) + _json_len(text)
        if size > budget and not (first and end == start):
            break
        budget -= size
        end += 1
    return items[start:end], end, budget


def _figure_name(name: str, path: str) -> str:
    suffix = os.path.splitext(str(path))[1]
    return f"{FIGURES_ARTIFACT_DIR}/{name if not suffix or name.endswith(suffix) else name + suffix}"


class _Plan:
    """The requests of one write() (or of open's config) and which of them MLflow has accepted.

    Kept across a failed call so that the worker's retry of the same batch sends only the rest.
    """

    __slots__ = ("events", "ops", "done")

    def __init__(self, events: Sequence[tuple] | None, ops: list[tuple]) -> None:
        self.events = events
        self.ops = ops
        self.done = [False] * len(ops)

    def matches(self, events: Sequence[tuple]) -> bool:
        mine = self.events
        if mine is events:
            return True
        # The worker retries with the same list; a batch read back from the journal is an equal
        # copy. (NaN values make equal copies compare unequal: then the batch is sent again and
        # MLflow's SQL stores drop the points they already hold.)
        return (
            mine is not None and len(mine) == len(events) and len(events) > 0
            and mine[0] == events[0] and mine[-1] == events[-1]
        )


# ---------------------------------------------------------------------------------------------
# The MLflow side: plain tuples -> MlflowClient calls (the helper process, or the sink's thread)
# ---------------------------------------------------------------------------------------------

def _describe_error(exc: BaseException) -> tuple[str, str | None, bool]:
    """(message, MLflow error code, permanent?) of an exception raised by an MLflow call."""
    code = getattr(exc, "error_code", None)
    code = code if isinstance(code, str) else None
    permanent = code in _PERMANENT_CODES or isinstance(exc, (FileNotFoundError, IsADirectoryError))
    return f"{type(exc).__name__}: {exc}", code, permanent


class _Store:
    """The MLflow calls the sink needs, on plain values. Where MLflow runs (helper or sink thread)."""

    def __init__(self, uri: str, kind: str, artifact_location: str | None, display_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        if kind == "sqlite":
            _prepare_sqlite(uri, artifact_location)
        self._client = MlflowClient(uri)
        self._artifact_location = artifact_location
        self._display_uri = display_uri
        self._experiments: dict[str, str] = {}

    def call(self, op: str, args: tuple) -> Any:
        return getattr(self, f"_op_{op}")(*args)

    def _op_experiment(self, name: str) -> str:
        """The id of experiment `name`, created if missing."""
        known = self._experiments.get(name)
        if known is not None:
            return known
        from mlflow.exceptions import MlflowException

        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = self._client.create_experiment(name, artifact_location=self._artifact_location)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = self._client.get_experiment_by_name(name)  # someone else just made it
                if experiment is None:
                    raise
            else:
                self._experiments[name] = experiment_id
                return experiment_id
        if experiment.lifecycle_stage == "deleted":
            raise MlflowException(
                f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted in "
                f"{self._display_uri}; restore it (mlflow experiments restore --experiment-id "
                f"{experiment.experiment_id}) or log to another experiment",
                error_code="INVALID_STATE",
            )
        self._experiments[name] = experiment.experiment_id
        return experiment.experiment_id

    def _op_open(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Find or create the run; returns its ids and the params it already holds."""
        for name in spec["experiments"]:
            self._op_experiment(name)
        experiment_id = self._op_experiment(spec["experiment"])
        run = self._find_run(spec, experiment_id)
        if run is None:
            run = self._client.create_run(
                experiment_id, start_time=spec["start_ms"], tags=spec["tags"], run_name=spec["run_name"]
            )
        return {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "params": dict(run.data.params),
        }

    def _find_run(self, spec: dict[str, Any], experiment_id: str) -> Any:
        """The run to continue: `resume_run_id` if it still exists, else one tagged with our run id."""
        from mlflow.entities import ViewType
        from mlflow.exceptions import MlflowException

        if spec["resume_run_id"]:
            try:
                run = self._client.get_run(spec["resume_run_id"])
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            else:
                if run.info.lifecycle_stage != "deleted":
                    return run
        local_id = spec["tags"][TAG_RUN_ID]
        if "'" in local_id or "\\" in local_id:
            return None  # not expressible in MLflow's filter syntax; create a new run
        # Makes open idempotent: a retry after a lost answer continues the run it created.
        found = self._client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_RUN_ID}` = '{local_id}'",
            run_view_type=ViewType.ACTIVE_ONLY, max_results=1,
        )
        return found[0] if found else None

    def _op_batch(self, run_id: str, metrics: list[tuple], params: list[tuple], tags: list[tuple]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self._client.log_batch(
            run_id,
            metrics=[Metric(k, v, ts, step) for k, v, ts, step in metrics],
            params=[Param(k, v) for k, v in params],
            tags=[RunTag(k, v) for k, v in tags],
            synchronous=True,
        )

    def _op_params(self, run_id: str) -> dict[str, str]:
        return dict(self._client.get_run(run_id).data.params)

    def _op_artifact(self, run_id: str, path: str, name: str) -> None:
        """Log the file at `path` as artifact `name` (sub-folders kept)."""
        folder, _, file_name = name.rpartition("/")
        if os.path.basename(path) == file_name:
            self._client.log_artifact(run_id, path, folder or None)
            return
        # MLflow names an artifact after its file: give the file the artifact's name.
        with tempfile.TemporaryDirectory(prefix="mlflow-sink-") as tmp:
            staged = os.path.join(tmp, file_name)
            try:
                os.link(path, staged)
            except OSError:
                shutil.copyfile(path, staged)
            self._client.log_artifact(run_id, staged, folder or None)

    def _op_terminate(self, run_id: str, status: str, end_ms: int) -> None:
        self._client.set_terminated(run_id, status, end_time=end_ms)


def _prepare_sqlite(uri: str, artifact_location: str | None) -> None:
    """Create the database's folder, and a new database with its artifact root next to it.

    MLflow puts the Default experiment's artifacts under ./mlruns of whichever directory the first
    client happened to run in; creating the database here pins them next to the database.
    """
    db_path = Path(uri[len("sqlite:///"):].partition("?")[0])
    db_path.parent.mkdir(parents=True, exist_ok=True)
    if db_path.exists() or artifact_location is None:
        return
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        SqlAlchemyStore(uri, artifact_location).engine.dispose()
    except Exception as exc:  # not public API: if it moved, MLflow creates the database itself
        _logger.debug("mlflow sink: could not pre-create %s (%s); MLflow will", db_path, exc)


# ---------------------------------------------------------------------------------------------
# Backends: where the store runs
# ---------------------------------------------------------------------------------------------

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


_HEADER = struct.Struct("!Q")

#: run in the helper's fresh interpreter: the parent's sys.path, then this module's `_helper_main`
_BOOTSTRAP = "import sys; sys.path[:0] = {path!r}; import importlib; importlib.import_module({module!r})._helper_main({fd})"


def _send_msg(sock: socket.socket, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)))
    sock.sendall(data)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        chunks += chunk
    return bytes(chunks)


def _recv_msg(sock: socket.socket) -> Any:
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return pickle.loads(_recv_exact(sock, size))


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
        timeout = None if op == "artifact" else self._call_timeout_s
        return self._exchange((op, args), timeout, what=f"the MLflow call {op!r}")

    def _exchange(self, message: Any, timeout: float | None, what: str) -> Any:
        sock = self._sock
        assert sock is not None
        try:
            sock.settimeout(timeout)
            _send_msg(sock, message)
            reply = _recv_msg(sock)
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
        if not sys.executable:
            raise MLflowSinkError(
                "cannot start the MLflow helper process: sys.executable is empty (embedded Python?); "
                "use MLflowSink(process=False) to run MLflow on the sink's thread"
            )
        parent, child = socket.socketpair()
        bootstrap = _BOOTSTRAP.format(path=list(sys.path), module=__name__, fd=child.fileno())
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", bootstrap],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # MLflow's log lines go to stderr, which is inherited
                env={**os.environ, **self._env},
                close_fds=True,
            )
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
        return _reap(proc, _HELPER_STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Ask the helper to exit, and wait for it (bounded)."""
        if self._sock is not None:
            try:
                self._sock.settimeout(_HELPER_STOP_TIMEOUT_S)
                _send_msg(self._sock, None)
            except OSError:
                pass
        self._kill()


def _reap(proc: subprocess.Popen, timeout_s: float) -> int | None:
    """Wait up to `timeout_s` for `proc`, then terminate it, then kill it."""
    for stop in (None, proc.terminate, proc.kill):
        if stop is not None:
            try:
                stop()
            except OSError:
                pass
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


def _lower_priority() -> None:
    """Put the helper below the training process in the scheduler's eyes.

    On a machine with few cores a busy store (sqlite ingestion takes ~110 µs of CPU a metric point)
    must not take the CPU from the training loop or from the thread that holds its GIL: it catches
    up whenever the trainer leaves a core idle. Nice 10 (a CFS weight of 110 against 1024), not
    lower and not SCHED_IDLE (weight 3): when data-loader workers keep every core busy, the helper
    must still ingest enough not to leave the whole run for `end_run`'s deadline. Measured on 2
    cores, SCHED_IDLE did not make the loop measurably faster (1.09-1.14x vs 1.17x).
    """
    try:
        os.nice(_HELPER_NICENESS)
    except OSError:
        pass


def _helper_main(fd: int) -> None:
    """The helper process: answer the sink's calls until it says stop or goes away."""
    # Ctrl-C reaches the whole process group; the parent decides when the helper stops, so that
    # the run's last batches and its status still reach MLflow after a KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _lower_priority()
    sock = socket.socket(fileno=fd)
    try:
        config = _recv_msg(sock)
        store = _Store(config["uri"], config["kind"], config["artifact_location"], config["display_uri"])
        reply: tuple = ("ok", os.getpid())
    except BaseException as exc:
        _send_msg(sock, ("err", *_describe_error(exc)))
        return
    _send_msg(sock, reply)
    while True:
        try:
            message = _recv_msg(sock)
        except (EOFError, OSError):
            return  # the sink (or its whole process) is gone
        if message is None:
            # Everything MLflow was asked has been answered (and committed); skip the interpreter's
            # teardown, which takes about a second with MLflow loaded and would hold up close().
            sock.close()
            sys.stderr.flush()
            os._exit(0)
        op, args = message
        try:
            reply = ("ok", store.call(op, args))
        except Exception as exc:
            reply = ("err", *_describe_error(exc))
        try:
            _send_msg(sock, reply)
        except OSError:
            return


# ---------------------------------------------------------------------------------------------
# The sink
# ---------------------------------------------------------------------------------------------

def _http_env(timeout_s: int, max_retries: int, backoff_factor_s: int) -> dict[str, str]:
    for name, value in (("http_timeout_s", timeout_s), ("http_max_retries", max_retries),
                        ("http_backoff_factor_s", backoff_factor_s)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int (MLflow reads it as one), got {value!r}")
    # MLflow reads these from the environment at every request; there is no per-client setting.
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(backoff_factor_s),
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    }


def _require_mlflow() -> None:
    if importlib.util.find_spec("mlflow") is None:
        raise ImportError(
            "the MLflow sink needs mlflow: pip install 'batteryml-tracking[mlflow]' (or pip install mlflow)"
        )


class MLflowSink:
    """Sends a run to MLflow (see the module docstring). Every argument has a default.

    Args:
        tracking_uri: ``sqlite:///path.db``, ``http(s)://host:port``, ``file:./mlruns`` or None for
            ``$MLFLOW_TRACKING_URI`` or ``sqlite:///./artifacts/mlruns/mlflow.db``; see
            `tracking.mlflow_uri` for what each becomes. `self.tracking_uri` is the effective URI
            with credentials redacted, `self.ui_command` the command that shows the runs.
        experiment_name: the MLflow experiment of every run; None uses the run's experiment.
        process: run MLflow in a helper process (True), on the sink's thread (False), or decide by
            store (None: a helper for sqlite and file stores, whose work competes with training
            for the GIL; the sink's thread for servers).
        http_timeout_s, http_max_retries, http_backoff_factor_s: MLflow's HTTP settings for this
            sink's calls (whole numbers, as MLflow reads them). In a helper they apply to the helper
            only; with ``process=False`` they are set in this process's environment unless set there.
        start_timeout_s: how long the helper may take to start before `open` fails (and is retried).
        call_timeout_s: how long one call into the helper may take before the helper is restarted
            and the call fails (artifact uploads excepted); None waits for ever.
    """

    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str | os.PathLike | None = None,
        experiment_name: str | None = None,
        *,
        process: bool | None = None,
        http_timeout_s: int = DEFAULT_HTTP_TIMEOUT_S,
        http_max_retries: int = DEFAULT_HTTP_MAX_RETRIES,
        http_backoff_factor_s: int = DEFAULT_HTTP_BACKOFF_FACTOR_S,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        call_timeout_s: float | None = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        _require_mlflow()
        if experiment_name is not None and (not isinstance(experiment_name, str) or not experiment_name):
            raise ValueError(f"experiment_name must be a non-empty str or None, got {experiment_name!r}")
        resolved = resolve_tracking_uri(tracking_uri)
        self._resolved = resolved
        self.tracking_uri: str = resolved.redacted
        self.ui_command: str | None = resolved.ui_command
        self.experiment_name = experiment_name
        self.process: bool = resolved.is_local if process is None else bool(process)
        env = dict(resolved.env)
        if resolved.kind == "http":
            env.update(_http_env(http_timeout_s, http_max_retries, http_backoff_factor_s))
            if self.process or resolved.redacted != resolved.uri:
                # set_terminated prints the run's URL to stdout, credentials included
                env["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        if self.process:
            self._backend: Any = _HelperBackend(resolved, env, start_timeout_s, call_timeout_s)
        else:
            # Set here, on the thread that builds the sink, before any worker thread reads the
            # environment; values the user set win.
            for key, value in env.items():
                os.environ.setdefault(key, value)
            self._backend = _InlineBackend(resolved)
        # Guards the backend (the helper's socket carries one call at a time) and the run state.
        # The core calls a sink from one thread at a time, but a call it abandoned (end_run's
        # deadline) may still be running when the next run opens this sink.
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._encoder = _Encoder(self._warn_once)
        self._reset_run()
        if resolved.note:
            self._warn_once("uri", resolved.note, stacklevel=2)

    def __repr__(self) -> str:
        return f"MLflowSink({self.tracking_uri!r}, process={self.process})"

    @property
    def helper_pid(self) -> int | None:
        """The helper process's pid while one runs (``process=True``), else None."""
        return getattr(self._backend, "pid", None)

    # -- the sink contract ---------------------------------------------------------------------

    def open(self, run: RunContext) -> Mapping[str, Any] | None:
        """Find or create the MLflow run and log the config; returns the run's MLflow ids."""
        with self._lock:
            if self._local_run_id != run.run_id:
                self._reset_run()
                self._local_run_id = run.run_id
            if self._run_id is None:  # a retry after a later step failed keeps the run it made
                opened = self._backend.call("open", self._open_spec(run))
                self._run_id = opened["run_id"]
                self._facts = {
                    "mlflow_run_id": opened["run_id"],
                    "tracking_uri": self.tracking_uri,
                    "experiment_id": opened["experiment_id"],
                }
                self._encoder.start_run(opened["params"])
                self._encoder.secret_patterns = run.secret_key_patterns
                config: dict[str, str] = {}
                self._encoder.param_pairs(run.config or {}, config)
                self._plan = _Plan(None, self._encoder.batches([], list(config.items()), []))
            rejected = self._run_plan(self._plan) if self._plan is not None else []
            self._plan = None
            if rejected:  # open has no "permanent" answer: say so and go on with the run
                _logger.warning("mlflow sink: MLflow refused part of the config: %s", "; ".join(rejected))
            return dict(self._facts)

    def write(self, events: Sequence[tuple]) -> None:
        """Send `events`; on a retry of the same batch, only the requests MLflow has not accepted."""
        with self._lock:
            if self._run_id is None:
                raise RuntimeError("MLflowSink.write() was called before open() succeeded; call open(run) first")
            plan = self._plan
            if plan is None or not plan.matches(events):
                plan = self._plan = _Plan(events, self._encoder.encode(events))
            rejected = self._run_plan(plan)
            self._plan = None
            if rejected:
                raise PermanentSinkError(
                    f"MLflow refused {len(rejected)} of {len(plan.ops)} requests (the others were "
                    f"delivered): {'; '.join(rejected[:3])}"
                )

    def flush(self) -> None:
        """Nothing to do: `write` returns only when MLflow has answered every request."""

    def close(self, status: str) -> None:
        """Set the run's final status, then stop the helper process."""
        with self._lock:
            if self._run_id is not None:
                try:
                    self._backend.call("terminate", self._run_id, status, int(time.time() * 1000))
                except MLflowSinkError as exc:
                    if not exc.permanent:
                        raise  # the worker retries close(); the helper stays up for that
                    # e.g. the run was deleted meanwhile: retrying cannot help, and close must end
                    _logger.warning("mlflow sink: could not set run %s to %s: %s", self._run_id, status, exc)
            self._backend.stop()
            self._reset_run()

    # -- internals -----------------------------------------------------------------------------

    def _reset_run(self) -> None:
        self._local_run_id: str | None = None
        self._run_id: str | None = None
        self._facts: dict[str, Any] = {}
        self._plan: _Plan | None = None

    def _open_spec(self, run: RunContext) -> dict[str, Any]:
        experiment = self.experiment_name or run.experiment
        return {
            "experiment": experiment,
            "experiments": [name for name in run.experiments if name != experiment],
            "run_name": run.run_name,
            "start_ms": int(run.start_time * 1000),
            "tags": {TAG_RUN_ID: run.run_id, TAG_RUN_DIR: str(run.run_dir)},
            "resume_run_id": self._resume_run_id(run),
        }

    def _resume_run_id(self, run: RunContext) -> str | None:
        """The MLflow run an earlier delivery of this run created, if it went to this store."""
        resume = run.resume or {}
        facts = (resume.get("sinks") or {}).get(self.name) or {}
        run_id = facts.get("mlflow_run_id") or resume.get("mlflow_run_id")
        uri = facts.get("tracking_uri") or resume.get("tracking_uri")
        if run_id and uri and uri != self.tracking_uri:
            self._warn_once(
                "resume_uri",
                f"run {run.run_id!r} was sent to MLflow at {uri} before; it is sent to {self.tracking_uri} "
                "now, as a new MLflow run there",
            )
            return None
        return run_id

    def _run_plan(self, plan: _Plan) -> list[str]:
        """Send the plan's requests that MLflow has not accepted yet; returns the refused ones."""
        rejected: list[str] = []
        for index, op in enumerate(plan.ops):
            if plan.done[index]:
                continue
            try:
                self._send(op)
            except MLflowSinkError as exc:
                if not exc.permanent:
                    raise  # transient: the worker retries this batch; done requests are skipped
                if not self._resend_without_held_params(op):
                    rejected.append(f"{op[0]}: {exc}")
            plan.done[index] = True
        return rejected

    def _send(self, op: tuple) -> Any:
        if op[0] == "experiment":
            return self._backend.call("experiment", op[1])
        return self._backend.call(op[0], self._run_id, *op[1:])

    def _resend_without_held_params(self, op: tuple) -> bool:
        """After MLflow refused a batch with params: drop the params it already holds, send again.

        Another writer (or an earlier delivery) may have logged a param with another value; MLflow
        then refuses the whole request, every time. Returns False if that was not the cause.
        """
        if op[0] != "batch" or not op[2]:
            return False
        held = self._backend.call("params", self._run_id)
        kept = []
        for key, value in op[2]:
            if key not in held:
                kept.append((key, value))
            elif held[key] != value:
                self._encoder.warn_param_changed(key, held[key], value)
        self._encoder.params.update(held)
        if len(kept) == len(op[2]):
            return False
        try:
            self._backend.call("batch", self._run_id, op[1], kept, op[3])
        except MLflowSinkError as exc:
            if exc.permanent:
                return False
            raise
        return True

    def _warn_once(self, kind: str, message: str, stacklevel: int = 1) -> None:
        """Warn about `kind` once per sink; `stacklevel` counts from the caller of this method."""
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, MLflowSinkWarning, stacklevel=stacklevel + 1)
