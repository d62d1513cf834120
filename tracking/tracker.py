"""The `Tracker`: the API a training loop calls, with the BatteryML tracking docs' method names.

Log calls run on the caller's thread (any thread; several at once): they validate their arguments,
capture the value as it is now, and append one event to the queue (async mode) or hand it to the
sinks inline (sync mode). Lifecycle calls (`start_run`, `flush`, `end_run`) also run on the caller's
thread and talk to the worker through control markers in the same queue.

The hot path is kept flat on purpose: `log_metric` is a few type checks, a dict, a tuple and
`deque.append`. Everything else (steps, journal, files, network) happens on the worker.
"""
from __future__ import annotations

import contextlib
import enum
import io
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import anyio

# The worker imports asyncio lazily through anyio; import it here, on the importing thread, so a
# fork() that happens while the worker is still importing can't leave the child with a half-imported
# module (seen: "partially initialized module 'asyncio'" in a forked child's first run).
import anyio._backends._asyncio  # noqa: F401

from . import lifecycle
from .errors import (
    ArtifactNotFoundError,
    InvalidKeyError,
    NoActiveRunError,
    RunAlreadyActiveError,
    RunEndedError,
)
from .events import (
    ARTIFACT,
    EXPERIMENT,
    FIGURE,
    METRICS,
    METRICS_DEFERRED,
    PARAMS,
    TAG,
    CudaScalar,
    capture_metrics,
    check_key,
    check_name,
    check_step,
    coerce_value,
    copy_params,
)
from .inline import InlineDispatcher
from .lane import RetryPolicy, SinkLane
from .queue import BLOCK, POLICIES, EventQueue
from .recorder import Recorder
from .redact import DEFAULT_SECRET_KEY_PATTERNS
from .rundir import ARTIFACTS_DIR, base_meta, create_run_dir, new_run_id, write_meta
from .sinks import RunContext, resolve_sink
from .snapshot import snapshot_file
from .stats import RunReport, TrackerStats
from .worker import StopRequest, Worker

__all__ = ["Tracker", "RunState", "MODES", "STATUSES"]

_logger = logging.getLogger(__name__)

MODES = ("async", "sync")
STATUSES = ("FINISHED", "FAILED", "KILLED")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_time = time.time


class RunState(enum.Enum):
    """Where a tracker is in its life."""

    IDLE = "idle"  #: no run started yet
    RUNNING = "running"
    ENDED = "ended"  #: the last run ended; start_run() may begin another
    INERT = "inert"  #: a non-zero rank, or a forked child: log calls are accepted and discarded


class Tracker:
    """An experiment tracker whose log calls cost about a microsecond.

    Args:
        sinks: sink names ("json", "tensorboard", "mlflow", or any `tracking.sinks` entry point),
            sink classes, or sink instances.
        mode: "async" (a background worker delivers) or "sync" (sinks run inside each call).
        base_dir: where run directories go: `{base_dir}/{run_id}/`.
        experiment_name: the experiment new runs belong to (`set_experiment` changes it).
        memory_budget_bytes: the most memory queued events may take before the full-queue policy applies.
        full_queue_policy: "block" (the caller waits; nothing is lost) or "drop" (counted, reported).
        batch_interval_s: the longest the worker waits before draining the queue.
        batch_max_events: the most events the worker takes per batch.
        max_sink_backlog_events: events a slow sink may have waiting in memory; beyond that it
            catches up from the journal on disk.
        flush_timeout_s / end_timeout_s: default deadlines for `flush()` and `end_run()`.
        journal_fsync_interval_s: the journal is fsynced at least this often while events arrive.
        retry: back-off between retries of a failing sink.
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
        memory_budget_bytes: int = 64 * 2**20,
        full_queue_policy: str = BLOCK,
        batch_interval_s: float = 0.05,
        batch_max_events: int = 10_000,
        max_sink_backlog_events: int = 100_000,
        flush_timeout_s: float = 30.0,
        end_timeout_s: float = 30.0,
        journal_fsync_interval_s: float = 1.0,
        retry: RetryPolicy | None = None,
        rank: int | None = None,
        log_all_ranks: bool = False,
        secret_key_patterns: Iterable[str] = DEFAULT_SECRET_KEY_PATTERNS,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if full_queue_policy not in POLICIES:
            raise ValueError(f"full_queue_policy must be one of {POLICIES}, got {full_queue_policy!r}")
        if memory_budget_bytes <= 0:
            raise ValueError(f"memory_budget_bytes must be > 0, got {memory_budget_bytes!r}")
        self.sinks = [resolve_sink(spec) for spec in sinks]
        # One per sink, for every run of this tracker: see SinkLane (calls into a sink never overlap).
        self._sink_locks = [threading.Lock() for _ in self.sinks]
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must be unique within a tracker, got {names}")
        self.mode = mode
        self.base_dir = Path(base_dir)
        self.experiment_name = self._check_experiment(experiment_name)
        self.memory_budget_bytes = memory_budget_bytes
        self.full_queue_policy = full_queue_policy
        self.batch_interval_s = batch_interval_s
        self.batch_max_events = batch_max_events
        self.max_sink_backlog_events = max_sink_backlog_events
        self.flush_timeout_s = flush_timeout_s
        self.end_timeout_s = end_timeout_s
        self.journal_fsync_interval_s = journal_fsync_interval_s
        self.retry = retry or RetryPolicy()
        self.rank = _detect_rank() if rank is None else rank
        self.secret_key_patterns = tuple(p.lower() for p in secret_key_patterns)
        self.run_id: str | None = None
        self.last_report: RunReport | None = None
        self._experiments: list[str] = []
        self._run_dir: Path | None = None
        self._queue: EventQueue | None = None
        self._worker: Worker | None = None
        self._inline: InlineDispatcher | None = None
        self._recorder: Recorder | None = None
        # Guards the run's lifecycle (start/end/fork): never taken by log calls.
        self._lifecycle_lock = threading.RLock()
        self.state = RunState.IDLE
        self._emit = self._no_run
        if self.rank != 0 and not log_all_ranks:
            self._go_inert()

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
        meta.update(mode=self.mode, rank=self.rank)
        write_meta(run_dir, meta)
        header = {"run_id": run_id, "run_name": run_name, "experiment": self.experiment_name,
                  "config": config, "start_time": start}
        recorder = Recorder(run_dir, header, meta, self.journal_fsync_interval_s)
        run = RunContext(run_id=run_id, run_name=run_name, run_dir=run_dir, experiment=self.experiment_name,
                         config=config, start_time=start, mode=self.mode, experiments=tuple(self._experiments),
                         secret_key_patterns=self.secret_key_patterns)
        if self.mode == "sync":
            self._inline = InlineDispatcher(recorder, self.sinks, run)
            recorder.note_facts({s.name: s.facts for s in self._inline.states})
            self._emit = self._inline.emit
        else:
            self._start_worker(recorder, run)
        self.run_id, self._run_dir, self._recorder = run_id, run_dir, recorder
        self.state = RunState.RUNNING
        lifecycle.track(self)

    def _start_worker(self, recorder: Recorder, run: RunContext) -> None:
        worker: Worker | None = None
        queue = EventQueue(
            self.memory_budget_bytes, self.full_queue_policy, wake_at_events=self.batch_max_events,
            is_consumer_alive=lambda: worker is not None and worker.is_alive(),
        )
        lanes: list[SinkLane] = []
        worker = Worker(queue, recorder, lanes, self.batch_interval_s, self.batch_max_events)
        lanes.extend(
            SinkLane(sink, run, recorder, self.retry, self.max_sink_backlog_events, worker.notify, lock)
            for sink, lock in zip(self.sinks, self._sink_locks)
        )
        worker.lanes = lanes
        worker.start()
        self._queue, self._worker = queue, worker
        self._emit = queue.put

    def end_run(self, status: str = "FINISHED", timeout_s: float | None = None) -> RunReport | None:
        """End the active run: flush within `timeout_s`, close the sinks, report what did not arrive.

        Idempotent: without an active run it returns the last run's report (None if there was none).
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        timeout_s = self.end_timeout_s if timeout_s is None else timeout_s
        with self._lifecycle_lock:
            if self.state is not RunState.RUNNING:
                return self.last_report
            self._emit = self._run_ended  # from here on, log calls raise instead of being lost
            self.state = RunState.ENDED
            report = self._stop(status, timeout_s)
            self.last_report = report
            self._worker = self._inline = self._queue = None
            lifecycle.untrack(self)
        if not report.complete or report.timed_out:
            _logger.warning("tracking: %s", report.summary())
        return report

    def _stop(self, status: str, timeout_s: float) -> RunReport:
        if self._inline is not None:
            return self._inline.stop(status, dropped=0)
        stop = StopRequest(status=status, deadline=time.monotonic() + timeout_s, dropped=self._queue.dropped)
        report = self._worker.request_stop(stop)
        if report is None:
            report = self._salvage(status)
        return report

    def _salvage(self, status: str) -> RunReport:
        """The worker died: journal what is still queued, here, so replay can deliver it."""
        worker, queue = self._worker, self._queue
        if worker.is_alive():  # stuck past its own deadline (should not happen): don't race it
            return RunReport(self.run_id, self._run_dir, status, self._recorder.last_seq, queue.dropped,
                             {l.state.name: l.state.report(self._recorder.last_seq) for l in worker.lanes},
                             timed_out=True)
        events = [item for item in queue.drain(len(queue)) if type(item) is tuple]
        if events:
            self._recorder.record(events)
        return self._recorder.finish(status, [l.state for l in worker.lanes], queue.dropped, timed_out=True)

    def _end_from_hook(self, status: str, timeout_s: float) -> None:
        """Called by the atexit hook and signal handlers (tracking.lifecycle)."""
        if self.state is RunState.RUNNING:
            self.end_run(status, timeout_s=min(timeout_s, self.end_timeout_s))

    def _become_inert_after_fork(self) -> None:
        """In a forked child: forget the parent's run without touching its files or threads."""
        # Locks may have been held by another parent thread at fork time (the worker in the middle
        # of a sink call, say); that thread does not exist here, so fresh ones are the safe ones.
        self._lifecycle_lock = threading.RLock()
        self._sink_locks = [threading.Lock() for _ in self.sinks]
        if self._queue is not None:
            self._queue.discard_all()
        self._worker = self._inline = self._queue = self._recorder = None
        self.run_id = None
        self.state = RunState.IDLE
        self._emit = self._discard

    def _go_inert(self) -> None:
        self.state = RunState.INERT
        self._emit = self._discard

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything logged so far reached every healthy sink; False if `timeout_s` passed."""
        timeout_s = self.flush_timeout_s if timeout_s is None else timeout_s
        worker, inline = self._worker, self._inline
        if worker is not None:
            return worker.request_flush(timeout_s)
        if inline is not None:
            return inline.flush()
        return True

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
        if type(key) is not str or not key:
            check_key(key)
        if step is not None and (type(step) is not int or step < 0):
            step = check_step(step)
        if type(value) is not float:
            value = coerce_value(key, value)
            if type(value) is CudaScalar:
                self._emit((METRICS_DEFERRED, {key: value}, step, _time()))
                return
        self._emit((METRICS, {key: value}, step, _time()))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log several metrics at one step; they travel as one event."""
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
        if step is not None and (type(step) is not int or step < 0):
            step = check_step(step)
        kind, values = capture_metrics(metrics)
        if values:
            self._emit((kind, values, step, _time()))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log hyperparameters; they update `config.json` and become MLflow params."""
        self._emit((PARAMS, copy_params(dict(params) if isinstance(params, Mapping) else params), _time()))

    def set_tag(self, key: str, value: Any) -> None:
        """Set a tag (kept as text) on the run."""
        check_key(key, what="tag")
        self._emit((TAG, key, value if type(value) is str else str(value), _time()))

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
        name = check_name(artifact_name if artifact_name is not None else source.name, "artifact_name")
        destination = run_dir / ARTIFACTS_DIR / name
        snapshot_file(source, destination)
        self._emit((ARTIFACT, name, str(destination), _time()))

    def log_figure(self, figure: Any, name: str) -> None:
        """Save a figure as `figures/{name}.png` (and a TensorBoard image, an MLflow artifact).

        A matplotlib figure is rendered here, on the caller's thread: matplotlib is not thread-safe
        and the figure may be changed right after the call. PNG bytes are taken as they are.
        """
        check_name(name, "figure name")
        self._require_run_dir()
        self._emit((FIGURE, name, _png_bytes(figure), _time()))

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
        recorder, queue, worker, inline = self._recorder, self._queue, self._worker, self._inline
        if worker is None and inline is None:
            return self._stats_from_report(self.last_report)
        states = [lane.state for lane in worker.lanes] if worker is not None else inline.states
        depth = len(queue) if queue is not None else 0
        last_seq = recorder.last_seq
        return TrackerStats(
            queue_depth=depth,
            enqueued=last_seq + depth,
            dropped=queue.dropped if queue is not None else 0,
            delivered={s.name: s.delivered for s in states},
            undelivered={s.name: max(last_seq - s.delivered_seq, 0) for s in states},
            sink_errors={s.name: s.errors for s in states},
            worker_lag_s=worker.lag_s if worker is not None else 0.0,
            journal_errors=recorder.journal_errors,
        )

    @staticmethod
    def _stats_from_report(report: RunReport | None) -> TrackerStats:
        sinks = report.sinks if report is not None else {}
        return TrackerStats(
            queue_depth=0,
            enqueued=report.events if report is not None else 0,
            dropped=report.dropped if report is not None else 0,
            delivered={n: s["delivered"] for n, s in sinks.items()},
            undelivered={n: s["undelivered"] for n, s in sinks.items()},
            sink_errors={n: s["errors"] for n, s in sinks.items()},
            worker_lag_s=0.0,
            journal_errors=0,
        )

    # -- internals ------------------------------------------------------------------------------------

    def _require_run_dir(self) -> Path | None:
        """The active run's directory; None when inert; raises when there is no active run."""
        if self.state is RunState.RUNNING:
            return self._run_dir
        if self._emit == self._discard:
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
        return name


def _png_bytes(figure: Any) -> bytes:
    if isinstance(figure, (bytes, bytearray)):
        if not bytes(figure[:8]) == _PNG_SIGNATURE:
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


def _detect_rank() -> int:
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0
