"""The `Tracker`: the API a training loop calls, with the BatteryML tracking docs' method names.

Log calls run on the caller's thread (any thread; several at once): they validate their arguments,
capture the value as it is now, and append one event to the queue (async mode) or hand it to the
journal and the sinks inline (sync mode). Lifecycle calls (`start_run`, `flush`, `end_run`) also
run on the caller's thread; they drive the active run's parts (`tracking.recorder.run`).

The hot path is kept flat on purpose: `log_metric` is a few type checks, three tuples and
`deque.append`. Journaling happens on the writer thread; everything else (sinks, encoding,
retries, catching up) in the delivery agent, another process.
"""
from __future__ import annotations

import contextlib
import enum
import errno
import functools
import io
import logging
import os
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

# A delivery thread (tracking.recorder.link) runs anyio on asyncio, imported there lazily; asyncio is
# imported here, on the importing thread, so that a fork() while that thread still imports it can't
# leave the child with a half-imported module (seen: "partially initialized module 'asyncio'").
# anyio's own asyncio backend is still imported on that thread (anyio has no public way to import
# it ahead): a child forked right then could not run a delivery thread of its own.
import asyncio  # noqa: F401

import anyio

from .recorder import lifecycle
from .recorder.run import AsyncRun, RunSettings, SyncRun
from .delivery.cursors import DeliveryStore
from .delivery.engine import RetryPolicy
from .recorder.link import PROCESS, THREAD, AgentLink
from .agent.protocol import AgentOptions
from .delivery.specs import SinkSpec, plan_sink
from .core.errors import (
    ArtifactNotFoundError, InvalidKeyError, InvalidNameError, InvalidParamError, NoActiveRunError,
    RunAlreadyActiveError, RunEndedError, RunIdPendingError,
)
from .journal.events import ARTIFACT, EXPERIMENT, FIGURE, MODEL, PARAMS, PNG_SIGNATURE, TAG
from .recorder.capture import check_key, copy_params, metric_event, metrics_event, scalar_event, scalars_event
from .core.names import check_name, check_text
from .recorder.models import (
    ModelInfo, check_model, check_registered_model_name, model_folder_above, save_model_folder,
)
from .recorder.queue import BLOCK, POLICIES
from .core.redact import DEFAULT_SECRET_KEY_PATTERNS
from .journal.rundir import ARTIFACTS_DIR, base_meta, create_run_dir, finish_meta, new_run_id, write_meta
from .recorder.batch import RunJournal
from .sinks import RunContext, Sink
from .recorder.snapshot import snapshot_file
from .recorder.stats import RunReport, TrackerStats

__all__ = ["Tracker", "RunState", "MODES", "STATUSES"]

_logger = logging.getLogger(__name__)

MODES = ("async", "sync")
STATUSES = ("FINISHED", "FAILED", "KILLED")
_time = time.time
#: bytes a figure's file name adds to its name (`_{count}.png`), and a snapshot's temporary name
_FIGURE_SUFFIX_BYTES = 12
_SNAPSHOT_SUFFIX_BYTES = 24
_MODEL_SUFFIX_BYTES = 6  # "-9999": a second model at one artifact_path
#: the sink whose run id `get_run_id()` reports, and how often it looks while the sink opens
_MLFLOW_SINK = "mlflow"
_RUN_ID_POLL_S = 0.05


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class RunState(enum.Enum):
    """Where a tracker is in its life."""

    IDLE = "idle"  #: no run started yet
    RUNNING = "running"
    ENDED = "ended"  #: the last run ended; start_run() may begin another
    FORKED = "forked"  #: a forked child: the parent's run is not ours; log calls are discarded until start_run()
    INERT = "inert"  #: a non-zero rank: log calls are accepted and discarded, runs are not started


class Tracker:
    """An experiment tracker whose log calls cost about a microsecond.

    Args:
        sinks: sink names ("json", "tensorboard", "mlflow", or any `tracking.sinks` entry point),
            sink classes, `(name_or_class, {kwargs})` pairs, or sink instances.
        mode: "async" (a delivery agent delivers from the journal) or "sync" (sinks run inside each call).
        base_dir: where run directories go: `{base_dir}/{run_id}/`.
        experiment_name: the experiment new runs belong to (`set_experiment` changes it).
        agent: where async delivery runs: "process" (a delivery agent process, the default) or
            "thread" (a thread of this process). Sinks that can't leave this process are served
            on a thread either way.
        memory_budget_bytes: the most memory queued events may take before the full-queue policy applies.
        full_queue_policy: "block" (the caller waits; nothing is lost) or "drop" (counted, reported).
        batch_interval_s: the longest the writer thread waits before journaling what is queued.
        batch_max_events: the most events the writer takes per batch.
        max_sink_backlog_events: fresh events the agent keeps decoded for sinks that keep up; a sink
            further behind reads the journal on its own.
        flush_timeout_s / end_timeout_s: default deadlines for `flush()` and `end_run()`.
        end_in_background: the default of `end_run(background=...)`.
        catch_up_timeout_s: how long an agent left alone (`end_run(background=True)`, or the training
            process died) keeps delivering before it leaves a sink behind.
        journal_fsync_interval_s: the journal is fsynced at least this often while events arrive.
        commit_interval_s: how often each sink's delivery cursor is committed while events flow.
        retry: back-off between retries of a failing sink, and when to give up.
        rank: this process's rank; default: torch.distributed's, else $RANK, else 0. Only rank 0
            records unless `log_all_ranks` is set; other ranks are inert.
        secret_key_patterns: config, param and tag keys containing any of these (case-insensitive)
            have their values masked in what leaves the machine (MLflow, TensorBoard text);
            `config.json` and the journal keep them.
    """

    def __init__(
        self,
        sinks: Iterable[Any] = ("json",),
        mode: str = "async",
        base_dir: str | os.PathLike = "artifacts/runs",
        experiment_name: str = "Default",
        *,
        agent: str = PROCESS,
        memory_budget_bytes: int = 64 * 2**20,
        full_queue_policy: str = BLOCK,
        batch_interval_s: float = 0.05,
        batch_max_events: int = 10_000,
        max_sink_backlog_events: int = 100_000,
        flush_timeout_s: float = 30.0,
        end_timeout_s: float = 30.0,
        end_in_background: bool = False,
        catch_up_timeout_s: float = 600.0,
        journal_fsync_interval_s: float = 1.0,
        commit_interval_s: float = 1.0,
        retry: RetryPolicy | None = None,
        rank: int | None = None,
        log_all_ranks: bool = False,
        secret_key_patterns: Iterable[str] = DEFAULT_SECRET_KEY_PATTERNS,
    ) -> None:
        _check_choice("mode", mode, MODES)
        _check_choice("full_queue_policy", full_queue_policy, POLICIES)
        _check_choice("agent", agent, (PROCESS, THREAD))
        for name, value in (("memory_budget_bytes", memory_budget_bytes), ("batch_max_events", batch_max_events),
                            ("max_sink_backlog_events", max_sink_backlog_events)):
            if type(value) is not int or value <= 0:
                raise ValueError(f"{name} must be > 0 (an int), got {value!r}")
        for name, value in (("batch_interval_s", batch_interval_s), ("flush_timeout_s", flush_timeout_s),
                            ("end_timeout_s", end_timeout_s), ("catch_up_timeout_s", catch_up_timeout_s),
                            ("journal_fsync_interval_s", journal_fsync_interval_s),
                            ("commit_interval_s", commit_interval_s)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        planned = [plan_sink(spec) for spec in sinks]
        self.sinks: list[Sink] = [sink for sink, _ in planned]
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique within a tracker, got {names}")
        if agent == THREAD:
            planned = [(sink, SinkSpec(sink.name, "object", sink)) for sink, _ in planned]
        self._specs = [spec for _, spec in planned]
        # One per sink, for every run of this tracker in sync mode: calls into a sink never overlap.
        self._sink_locks = [threading.Lock() for _ in self.sinks]
        self.mode = mode
        self.agent = agent
        self.base_dir = Path(base_dir)
        self.experiment_name = self._check_experiment(experiment_name)
        self.memory_budget_bytes = memory_budget_bytes
        self.full_queue_policy = full_queue_policy
        self.flush_timeout_s = flush_timeout_s
        self.end_timeout_s = end_timeout_s
        self.end_in_background = bool(end_in_background)
        self.retry = retry or RetryPolicy()
        self.settings = RunSettings(
            memory_budget_bytes=memory_budget_bytes, full_queue_policy=full_queue_policy,
            batch_interval_s=batch_interval_s, batch_max_events=batch_max_events,
            journal_fsync_interval_s=journal_fsync_interval_s, commit_interval_s=commit_interval_s,
            retry=self.retry,
        )
        self._agent_options = AgentOptions(retry=self.retry, commit_interval_s=commit_interval_s,
                                           max_sink_backlog_events=max_sink_backlog_events,
                                           catch_up_timeout_s=catch_up_timeout_s)
        self.rank = _detect_rank() if rank is None else rank
        self.secret_key_patterns = tuple(p.lower() for p in secret_key_patterns)
        self.run_id: str | None = None
        self.last_report: RunReport | None = None
        self._experiments: list[str] = []
        self._run_dir: Path | None = None
        self._active: AsyncRun | SyncRun | None = None
        self._links: list[AgentLink] | None = None  # built by the first async run, reused by later ones
        # Guards the run's lifecycle (start/end/fork): never taken by log calls.
        self._lifecycle_lock = threading.RLock()
        self.state = RunState.IDLE
        self._emit = self._no_run
        if self.rank != 0 and not log_all_ranks:
            self.state = RunState.INERT
            self._emit = self._discard

    # -- lifecycle ---------------------------------------------------------------------------------

    def start_run(self, run_name: str | None = None, config: Mapping[str, Any] | None = None) -> str | None:
        """Start a run; returns its id, `{run_name}_{YYYYmmdd_HHMMSS}_{suffix}` (None when inert)."""
        config = copy_params(dict(config) if config is not None else {}, what="config")
        run_id = new_run_id(run_name)
        with self._lifecycle_lock:
            if self.state is RunState.INERT:
                return None
            if self.state is RunState.RUNNING:
                raise RunAlreadyActiveError(
                    f"run {self.run_id!r} is still active; call end_run() before starting another"
                )
            self._open_run(run_id, run_name or "run", config)
        return run_id

    def _open_run(self, run_id: str, run_name: str, config: dict[str, Any]) -> None:
        run_dir = create_run_dir(self.base_dir, run_id)
        start = _time()
        meta = base_meta(run_id, run_name, self.experiment_name, start)
        # Every sink, before any agent reports on one: a run nothing delivered still names them.
        meta.update(mode=self.mode, rank=self.rank, sinks={sink.name: {} for sink in self.sinks})
        mlflow = next((sink for sink in self.sinks if sink.name == _MLFLOW_SINK), None)
        if isinstance(getattr(mlflow, "tracking_uri", None), str):
            meta["tracking_uri"] = mlflow.tracking_uri  # redacted; replay's store if no agent ever says it
        write_meta(run_dir, meta)
        header = {"run_id": run_id, "run_name": run_name, "experiment": self.experiment_name,
                  "config": config, "start_time": start}
        journal = RunJournal(run_dir, header, self.settings.journal_fsync_interval_s, self.settings.hold_events)
        run = RunContext(run_id=run_id, run_name=run_name, run_dir=run_dir, experiment=self.experiment_name,
                         config=config, start_time=start, mode=self.mode, experiments=tuple(self._experiments),
                         secret_key_patterns=self.secret_key_patterns)
        try:
            if self.mode == "sync":
                self._active = SyncRun(run, journal, list(zip(self.sinks, self._sink_locks)), self.settings)
            else:
                self._active = AsyncRun(run, journal, self._agent_links(), [s.name for s in self.sinks],
                                        self.settings, owner_close=self.close)
        except BaseException:  # no run after all: leave its directory ended, not RUNNING for ever
            journal.close("FAILED")
            finish_meta(run_dir, "FAILED", 0, {})
            raise
        self.run_id, self._run_dir = run_id, run_dir
        self.state = RunState.RUNNING
        self._emit = self._active.emit
        lifecycle.track(self)

    def _agent_links(self) -> list[AgentLink]:
        """The delivery agents of this tracker: one process for the sinks that can travel, one
        thread for those that can't (each only if it has sinks)."""
        if self._links is None:
            portable = [spec for spec in self._specs if spec.portable]
            local = [spec for spec in self._specs if not spec.portable]
            links = []
            if portable:
                links.append(AgentLink(portable, self._agent_options, PROCESS))
            if local:
                objects = {spec.name: spec.target for spec in local}
                links.append(AgentLink(local, self._agent_options, THREAD, objects=objects))
            for link in links:
                link.stop_with(self.close)  # a thread-leak check's stop() on a link's thread
            self._links = links
            lifecycle.track_links(self)
            # A tracker dropped without close() lets its agents go too (they hold no reference to it);
            # at interpreter exit the exit hook does it, after ending the run.
            weakref.finalize(self, _close_links, links).atexit = False
        return self._links

    def end_run(self, status: str = "FINISHED", timeout_s: float | None = None,
                background: bool | None = None) -> RunReport | None:
        """End the active run: deliver within `timeout_s`, close the sinks, report what did not arrive.

        `background=True` returns at once: the delivery agent finishes the slow sinks on its own
        (within `catch_up_timeout_s`), also after this process exits, and writes the run's final
        status when it is done; `python -m tracking show` says how far it is meanwhile.
        Idempotent: without an active run it returns the last run's report (None if there was none).
        """
        _check_choice("status", status, STATUSES)
        timeout_s = self.end_timeout_s if timeout_s is None else timeout_s
        background = self.end_in_background if background is None else bool(background)
        return self._end(status, timeout_s, background)

    def _end(self, status: str, timeout_s: float, background: bool, wait_s: float = 0.0) -> RunReport | None:
        with self._lifecycle_lock:
            if self.state is not RunState.RUNNING:
                return self.last_report
            self._emit = self._run_ended  # from here on, log calls raise instead of being lost
            self.state = RunState.ENDED
            report = self._active.end(status, timeout_s, background and self.mode == "async", wait_s)
            self.last_report = report
            self._active = None
            lifecycle.untrack(self)
        if report.background:
            _logger.info("%s", report.summary())
        elif not report.complete or report.timed_out:
            _logger.warning("%s", report.summary())
        return report

    def close(self, timeout_s: float | None = None) -> None:
        """End the active run (if any) and let the delivery agents go once they are done; with
        `timeout_s`, all of it within that time (the agents finish alone what is left)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.end_run(timeout_s=timeout_s)
        links, self._links = self._links, None
        for link in links or ():
            if deadline is None:
                link.close()
            else:
                link.close(timeout_s=max(deadline - time.monotonic(), 0.0))

    def _end_from_hook(self, status: str, timeout_s: float) -> None:
        """Called by the atexit hook and signal handlers (tracking.recorder.lifecycle): the process is going.

        Up to `timeout_s` is waited for the sinks; what an agent process has not delivered by then
        it delivers on its own (the run ends in the background), rather than being cut off.
        """
        if self.state is RunState.RUNNING:
            timeout_s = min(timeout_s, self.end_timeout_s)
            self._end(status, timeout_s, background=True, wait_s=timeout_s)

    def _close_links_at_exit(self) -> None:
        """At interpreter exit: agent processes go on alone; agent threads get their Shutdown."""
        for link in self._links or ():
            link.close()

    def _after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's run and agents without touching their files or threads."""
        # Locks may have been held by another parent thread at fork time (the writer in the middle
        # of a call, say); that thread does not exist here, so fresh ones are the safe ones.
        self._lifecycle_lock = threading.RLock()
        self._sink_locks = [threading.Lock() for _ in self.sinks]
        if self._active is not None:
            self._active.forget_after_fork()
        for link in self._links or ():
            link.forget_after_fork()
        self._active, self._links = None, None
        if self.state is RunState.RUNNING:
            self.run_id = None
            self.state = RunState.FORKED
            self._emit = self._discard

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything logged so far reached every healthy sink; False if `timeout_s` passed."""
        timeout_s = self.flush_timeout_s if timeout_s is None else timeout_s
        active = self._active
        return active.flush(timeout_s) if active is not None else True

    async def aflush(self, timeout_s: float | None = None) -> bool:
        """`flush()` for asyncio or trio code: waits in a thread, so the event loop keeps running."""
        return await anyio.to_thread.run_sync(self.flush, timeout_s)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.state is RunState.RUNNING:
            self.end_run("FAILED" if exc_type is not None else "FINISHED")

    @contextlib.contextmanager
    def run(self, run_name: str | None = None, config: Mapping[str, Any] | None = None) -> Iterator[str | None]:
        """`with tracker.run("name", config) as run_id:` ends FINISHED, or FAILED and re-raises."""
        run_id = self.start_run(run_name, config)
        try:
            yield run_id
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            self.end_run(status)
            raise
        self.end_run("FINISHED")

    # -- logging (hot path) -------------------------------------------------------------------------

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        """Log one metric value (int, float, numpy scalar or 0-d tensor) at `step`."""
        # C takes a plain call (a str key, a float or a tensor on the CPU, an int step); the
        # Python path every other call, with the checks that raise.
        self._emit(scalar_event(key, value, step) or metric_event(key, value, step))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log several metrics at one step; they travel as one event."""
        event = scalars_event(metrics, step) or metrics_event(metrics, step)
        if event is not None:  # None: no metrics
            self._emit(event)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log hyperparameters; they update `config.json` and become MLflow params."""
        self._emit((PARAMS, copy_params(dict(params) if isinstance(params, Mapping) else params), _time()))

    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag (kept as text) on the run."""
        check_key(key, what="tag")
        text = check_text(value if type(value) is str else str(value), "tag value", InvalidParamError)
        self._emit((TAG, key, text, _time()))

    def log_artifact(self, local_path: str | os.PathLike, artifact_name: str | None = None) -> None:
        """Keep a copy of a file, as it is now, under the run's `artifacts/` (and in MLflow).

        The content is captured before the call returns (a clone where the file system has one,
        else a kernel copy), so the loop may overwrite the file right after.
        """
        run_dir = self._require_run_dir()
        if run_dir is None:
            return
        source = Path(local_path)
        if not source.is_file():
            raise ArtifactNotFoundError(
                f"log_artifact: {str(source)!r} is not an existing file (cwd: {os.getcwd()})"
            )
        name = check_name(artifact_name if artifact_name is not None else source.name, "artifact_name",
                          reserve_bytes=_SNAPSHOT_SUFFIX_BYTES)
        above = model_folder_above(run_dir / ARTIFACTS_DIR, name)
        if above is not None:
            raise InvalidNameError(f"log_artifact: {name!r} would change the model logged at {above!r}; "
                                   "use a name outside its folder")
        destination = run_dir / ARTIFACTS_DIR / name
        try:
            snapshot_file(source, destination)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise InvalidNameError(f"log_artifact: the path {str(destination)[:60]!r}... is too long for "
                                       "this file system; use a shorter artifact_name") from None
            raise
        self._emit((ARTIFACT, name, str(destination), _time()))

    def log_figure(self, figure: Any, name: str) -> None:
        """Save a figure as `figures/{name}.png` (and a TensorBoard image, an MLflow artifact).

        A matplotlib figure is rendered here, on the caller's thread: matplotlib is not thread-safe
        and the figure may be changed right after the call. PNG bytes are taken as they are.
        """
        check_name(name, "figure name", reserve_bytes=_FIGURE_SUFFIX_BYTES)
        self._require_run_dir()
        self._emit((FIGURE, name, _png_bytes(figure), _time()))

    def log_model(self, model: Any, artifact_path: str = "model", registered_model_name: str | None = None,
                  input_example: Any = None) -> ModelInfo | None:
        """Keep `model` as it is now (an MLflow Model under the run's `artifacts/`) and send it to MLflow.

        The model is saved here, on the caller's thread (`tracking.recorder.models`): training it further
        after the call does not change what was logged. The MLflow sink delivers the folder as the
        MLflow run's artifacts at `artifact_path` and, with `registered_model_name`, creates a new
        version of that registered model. `input_example` (a tensor or array the model takes)
        selects MLflow's "pt2" format; without one the model is pickled (cloudpickle). Returns
        where the model is (`ModelInfo`); None on an inert tracker.
        """
        check_model(model)
        artifact_path = check_name(artifact_path, "artifact_path", reserve_bytes=_MODEL_SUFFIX_BYTES)
        check_registered_model_name(registered_model_name)
        run_dir = self._require_run_dir()
        if run_dir is None:
            return None
        used, folder, fmt = save_model_folder(model, run_dir / ARTIFACTS_DIR, artifact_path, input_example)
        self._emit((MODEL, used, str(folder), registered_model_name, _time()))
        # This run's MLflow run, whatever runs the tracker starts afterwards: read from its directory.
        mlflow_run_id = (functools.partial(_mlflow_run_of, DeliveryStore(run_dir), self.run_id, self.flush_timeout_s)
                         if self._sends_to_mlflow() else None)
        return ModelInfo(folder, used, registered_model_name, fmt, mlflow_run_id)

    def get_run_id(self, timeout_s: float | None = None) -> str | None:
        """The MLflow run id where this tracker has a sink named "mlflow", else ours (`run_id`);
        None before a run.

        The delivery agent creates the MLflow run shortly after `start_run`; until it has, this
        waits (at most `timeout_s`, default `flush_timeout_s`) and raises RunIdPendingError if
        MLflow still has no run by then (e.g. its server is down).
        """
        if self.run_id is None or not self._sends_to_mlflow():
            return self.run_id
        return _wait_for_mlflow_run(self.run_id, self._mlflow_run_id,
                                    self.flush_timeout_s if timeout_s is None else timeout_s,
                                    lambda: self.stats().sink_errors.get(_MLFLOW_SINK, 0))

    def create_experiment(self, name: str) -> str:
        """Create an experiment (an MLflow experiment where an MLflow sink is used); returns its name."""
        name = self._check_experiment(name)
        if name not in self._experiments:
            self._experiments.append(name)
        if self.state is RunState.RUNNING:
            self._emit((EXPERIMENT, name, _time()))
        return name

    def set_experiment(self, name: str) -> str:
        """Make `name` the experiment of the runs started from now on (created if missing)."""
        self.create_experiment(name)
        self.experiment_name = name
        return name

    # -- introspection --------------------------------------------------------------------------------

    def get_run_dir(self) -> Path:
        """The directory of the active run, or of the last one."""
        if self._run_dir is None:
            raise NoActiveRunError("no run has been started; call start_run() first")
        return self._run_dir

    def stats(self) -> TrackerStats:
        """A snapshot of the queue and of every sink's delivery (the last run's, once it ended)."""
        active = self._active
        if active is not None:
            return active.stats()
        report = self.last_report
        agent_pid = next((link.pid for link in self._links or () if link.kind == PROCESS), None)
        if report is None:
            return TrackerStats.of({}, 0, agent_pid=agent_pid)
        return TrackerStats.of(report.sinks, report.events, dropped=report.dropped, agent_pid=agent_pid, ended=True)

    # -- internals ------------------------------------------------------------------------------------

    def _sends_to_mlflow(self) -> bool:
        return any(sink.name == _MLFLOW_SINK for sink in self.sinks)

    def _mlflow_run_id(self) -> str | None:
        """The MLflow run id of the active (or last) run, if the MLflow sink has reported it."""
        if self.state is RunState.INERT:
            return None
        return self.stats().mlflow_run_id

    def _require_run_dir(self) -> Path | None:
        """The active run's directory; None when log calls are discarded; raises without a run."""
        state = self.state
        if state is RunState.RUNNING:
            return self._run_dir
        if state is RunState.INERT or state is RunState.FORKED:
            return None
        self._emit(None)  # raises the error that fits the state (no run yet / run ended)
        raise NoActiveRunError("no active run: call start_run() before logging")

    def _no_run(self, event: Any) -> None:
        raise NoActiveRunError("no active run: call start_run() before logging")

    def _run_ended(self, event: Any) -> None:
        raise RunEndedError(f"run {self.run_id!r} has ended; call start_run() to begin a new run")

    def _discard(self, event: Any) -> None:
        """Inert trackers (non-zero ranks, forked children) accept and drop log calls."""

    @staticmethod
    def _check_experiment(name: Any) -> str:
        if not isinstance(name, str) or not name.strip():
            raise InvalidKeyError(f"experiment name must be a non-empty str, got {name!r}")
        return check_text(name, "experiment name")


def _png_bytes(figure: Any) -> bytes:
    if isinstance(figure, (bytes, bytearray)):
        if not bytes(figure[:8]) == PNG_SIGNATURE:
            raise ValueError("log_figure: bytes given are not a PNG image (bad signature)")
        return bytes(figure)
    if not callable(getattr(figure, "savefig", None)):
        raise TypeError(
            f"log_figure: expected a matplotlib Figure (anything with savefig) or PNG bytes, "
            f"got {type(figure).__name__}"
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _wait_for_mlflow_run(run_id: str, known: Callable[[], str | None], timeout_s: float,
                         errors: Callable[[], int]) -> str:
    """The MLflow run id `known()` gives, polled until `timeout_s`; RunIdPendingError after that."""
    deadline = time.monotonic() + timeout_s
    found = known()
    while found is None and time.monotonic() < deadline:
        time.sleep(_RUN_ID_POLL_S)
        found = known()
    if found is None:
        raise RunIdPendingError(
            f"MLflow has no run for {run_id!r} yet (the MLflow sink's failed calls so far: {errors()}); "
            f"ask again later, or see `python -m tracking show {run_id}`"
        )
    return found


def _mlflow_run_of(store: DeliveryStore, run_id: str, timeout_s: float) -> str:
    """The MLflow run id the MLflow sink's delivery state of one run names, waited for."""
    def state() -> dict[str, Any]:
        return store.load(_MLFLOW_SINK) or {}

    return _wait_for_mlflow_run(run_id, lambda: (state().get("facts") or {}).get("mlflow_run_id"), timeout_s,
                                lambda: state().get("errors", 0))


def _close_links(links: list[AgentLink]) -> None:
    for link in links:
        link.close(timeout_s=0)


def _detect_rank() -> int:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
