"""The MLflow sink: a run's config, params, tags, metrics, artifacts and figures as one MLflow run.

Runs in the delivery agent (or on the caller's thread in sync mode), as every sink; see
`tracking.sinks.base`.
The constructor runs on the caller's thread. With ``process=True`` (the default for sqlite and file
stores) MLflow itself runs in a helper process (`helper`; why: `backends`), and the sink's thread
only turns events into plain tuples (`encode`) and waits for the helper's answer; otherwise MLflow
runs on the sink's thread. The helper is started by `open` and stopped by `close`; `write` returns
when the helper has answered, so delivery semantics are the same in both modes.

What MLflow gets:

- ``open``: the experiment (``experiment_name`` or the run's; created when missing, with
  ``run.experiments``), a run named ``run.run_name`` tagged ``tracking.run_id`` / ``tracking.run_dir``
  (an existing run with that tag, or ``mlflow_run_id`` from ``run.resume``, is continued instead),
  and the config flattened with "." as params (``model.hidden_dims``).
- ``write``: PARAMS flattened the same way; TAG as tags; METRICS as metric points with their steps
  and timestamps (ms); ARTIFACT under its name (sub-folders kept); FIGURE under ``figures/``;
  MODEL (an MLflow Model saved by `log_model`) at its artifact path, and with a registered model
  name a new version of that model, made once per event (a resumed delivery finds the version it
  made before); EXPERIMENT creates that experiment. Requests respect MLflow's limits, and what MLflow would refuse
  is fixed first, with one `MLflowSinkWarning` per kind (see `encode`).
- ``close``: the run's status (``set_terminated``).

Failures: any MLflow error is raised as `MLflowSinkError` (credentials redacted from the message),
which the delivery engine retries with back-off; the requests of a batch that MLflow already accepted are not
sent again on the retry. A request MLflow can never accept (its error code says so) is skipped, the
rest of the batch is still sent, and `write` then raises `PermanentSinkError`. HTTP calls are bounded
(``http_timeout_s``, ``http_max_retries``) so that a server that is down makes a call fail within a
few seconds instead of MLflow's default of 7 retries with 120 s timeouts; the engine's own back-off
takes it from there.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import threading
import time
import warnings
from typing import Any, Mapping, Sequence

from ...core.errors import MLflowSinkError, MLflowSinkWarning, PermanentSinkError
from ..base import RunContext
from .backends import _HelperBackend, _InlineBackend
from .encode import TAG_RUN_DIR, TAG_RUN_ID, _Encoder, _Plan
from .uri import resolve_tracking_uri

__all__ = [
    "MLflowSink",
    "DEFAULT_HTTP_TIMEOUT_S",
    "DEFAULT_HTTP_MAX_RETRIES",
    "DEFAULT_HTTP_BACKOFF_FACTOR_S",
    "DEFAULT_START_TIMEOUT_S",
    "DEFAULT_CALL_TIMEOUT_S",
]

_logger = logging.getLogger(__name__)

#: MLflow's HTTP defaults are 7 retries with back-off and 120 s timeouts (minutes per failing call)
DEFAULT_HTTP_TIMEOUT_S = 10
DEFAULT_HTTP_MAX_RETRIES = 2
DEFAULT_HTTP_BACKOFF_FACTOR_S = 1
#: how long the helper may take to start (import MLflow, create the database) before open fails
DEFAULT_START_TIMEOUT_S = 120.0
#: how long one call into the helper may take (artifact uploads excepted) before it is restarted
DEFAULT_CALL_TIMEOUT_S = 300.0


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
            `tracking.sinks.mlflow.uri` for what each becomes. `self.tracking_uri` is the effective URI
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
    portable = True  # settings until open() (see __reduce__): the agent may build its own copy

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
        # What a copy of this sink is built from in the delivery agent (see __reduce__).
        self._settings = dict(
            tracking_uri=resolved.uri, experiment_name=experiment_name, process=process,
            http_timeout_s=http_timeout_s, http_max_retries=http_max_retries,
            http_backoff_factor_s=http_backoff_factor_s, start_timeout_s=start_timeout_s,
            call_timeout_s=call_timeout_s,
        )
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
            # Set here, on the thread that builds the sink, before any delivery thread reads the
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

    def __reduce__(self) -> tuple:
        # A copy for the delivery agent is built from the settings, never from a live helper or
        # lock. The resolved URI (absolute, credentials included) travels over the agent's private
        # channel, never its argv or environment.
        return (functools.partial(type(self), **self._settings), ())

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
                _logger.warning("MLflow refused part of the config: %s", "; ".join(rejected))
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
                        raise  # the engine retries close(); the helper stays up for that
                    # e.g. the run was deleted meanwhile: retrying cannot help, and close must end
                    _logger.warning("could not set run %s to %s: %s", self._run_id, status, exc)
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
        facts = run.resume.facts if run.resume is not None else {}
        run_id, uri = facts.get("mlflow_run_id"), facts.get("tracking_uri")
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
                    raise  # transient: the engine retries this batch; done requests are skipped
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
