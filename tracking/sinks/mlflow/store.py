"""The MLflow calls the sink needs, on plain values; the only module of this package that imports mlflow.

Runs where MLflow runs: in the helper process (`helper`), or on the sink's thread (in the delivery agent, or
the caller's in sync mode) with ``process=False`` (`backends._InlineBackend`). mlflow is imported
inside the functions that call it, so importing this module is cheap and works without mlflow.

Errors: `_describe_error` reduces any exception from an MLflow call to (message, MLflow error code,
permanent?). A request MLflow can never accept (its error code is in `_PERMANENT_CODES`, or a file
to upload is missing) is permanent; anything else is transient. The backends raise that as
`MLflowSinkError` with credentials redacted.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from .encode import TAG_RUN_ID

#: the tag on a registry version we made: the model's artifact path in its run
TAG_MODEL_PATH = "tracking.artifact_path"

# Private to the package: the backends and the helper process use these.
__all__ = ["_Store", "_describe_error"]

_logger = logging.getLogger(__name__)

#: how long a process waits for another one to finish creating a new sqlite database's tables
#: (~2-5 s); below the sink's start timeout (120 s), so that this error is the one that says why
SQLITE_INIT_LOCK_TIMEOUT_S = 60.0
#: one thread of this process at a time sets up a database (the file lock is per process)
_INIT_THREADS = threading.Lock()

#: MLflow error codes that mean "this request will never be accepted"; any other error is transient
_PERMANENT_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST",
    "MALFORMED_REQUEST",
})


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
            with _sqlite_init_lock(_sqlite_path(uri)):  # one process at a time creates the tables
                _prepare_sqlite(uri, artifact_location)
                self._client = MlflowClient(uri)  # builds the store: creates or checks the tables
        else:
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

    def _op_model(self, run_id: str, folder: str, artifact_path: str, registered_name: str | None) -> None:
        """Upload a saved MLflow Model's folder to `artifact_path`; register a version if asked."""
        self._client.log_artifacts(run_id, folder, artifact_path)
        if registered_name is not None:
            version = self._register(run_id, artifact_path, registered_name)
            _logger.info("model %r version %s is runs:/%s/%s", registered_name, version,
                         run_id, artifact_path)

    def _register(self, run_id: str, artifact_path: str, name: str) -> str:
        """The version of `name` made from this run's `artifact_path`: the existing one, else a new one.

        A version we make carries the tag `TAG_MODEL_PATH`, so a retry or a resumed delivery finds
        it also where the registry rewrites a version's source.
        """
        from mlflow.exceptions import MlflowException

        source = f"runs:/{run_id}/{artifact_path}"
        try:
            self._client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # run ids are hex: safe to quote; the name is compared here, not in the filter
            for version in self._client.search_model_versions(f"run_id = '{run_id}'"):
                if version.name == name and (version.source == source
                                             or (version.tags or {}).get(TAG_MODEL_PATH) == artifact_path):
                    return version.version  # made already
        return self._client.create_model_version(name, source, run_id=run_id,
                                                 tags={TAG_MODEL_PATH: artifact_path}).version

    def _op_terminate(self, run_id: str, status: str, end_ms: int) -> None:
        self._client.set_terminated(run_id, status, end_time=end_ms)


def _sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///"):].partition("?")[0])


@contextlib.contextmanager
def _sqlite_init_lock(db_path: Path, timeout_s: float = SQLITE_INIT_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` (next to the database) while MLflow sets it up.

    MLflow creates a new database's tables by running its ~60 migrations, each checked against the
    version row the last one wrote. Two processes doing it at once (ranks of one job, parallel runs,
    a delivery agent replaced while its helper was still creating the database) break each other:
    with 3 processes starting on one new database, 2 or 3 of them failed ("Online migration
    expected to match one row ... 0 found", "Circular dependency detected"). The lock makes them
    take turns: the first creates the tables, the others find them. A POSIX record lock: the kernel
    releases it when its holder dies (a killed process never leaves it held), and a child forked
    meanwhile (a DataLoader worker) does not inherit it; it does not exclude threads of one process,
    so `_INIT_THREADS` does.
    """
    deadline = time.monotonic() + timeout_s
    if not _INIT_THREADS.acquire(timeout=timeout_s):
        raise TimeoutError(f"another thread has been setting up an MLflow database for over {timeout_s:g} s")
    try:
        with _record_lock(db_path, deadline, timeout_s):
            yield
    finally:
        _INIT_THREADS.release()


@contextlib.contextmanager
def _record_lock(db_path: Path, deadline: float, timeout_s: float) -> Iterator[None]:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db_path.with_name(db_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"another process has been setting up the MLflow database {db_path} for over "
                        f"{timeout_s:g} s (it holds {lock_path}); open is retried. If it is stuck, stop it"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _prepare_sqlite(uri: str, artifact_location: str | None) -> None:
    """Create a new database with its artifact root next to it (under `_sqlite_init_lock`).

    MLflow puts the Default experiment's artifacts under ./mlruns of whichever directory the first
    client happened to run in; creating the database here pins them next to the database.
    """
    db_path = _sqlite_path(uri)
    if db_path.exists() or artifact_location is None:
        return
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        SqlAlchemyStore(uri, artifact_location).engine.dispose()
    except Exception as exc:  # not public API: if it moved, MLflow creates the database itself
        _logger.debug("could not pre-create %s (%s); MLflow will", db_path, exc)
