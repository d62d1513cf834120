"""The run directory: run ids, the folder layout, and the run meta file.

`create_run_dir` runs on the caller's thread inside `start_run()`; `write_meta` runs there once and
then on the worker thread (or the caller's, in sync mode) when the run ends.

Layout of `{base_dir}/{run_id}/`:

    meta.json          name, experiment, tags, status, start/end time, host, pid, sink reports
    journal.jsonl      every event of the run, in order (see `tracking.journal`)
    config.json        written by the JSON sink
    metrics.json       written by the JSON sink
    step_metrics.csv   written by the JSON sink at run end
    artifacts/         snapshots taken by `log_artifact`
    figures/           PNGs from `log_figure`
    tensorboard/       written by the TensorBoard sink
"""
from __future__ import annotations

import datetime as _dt
import os
import secrets
import socket
from pathlib import Path
from typing import Any

import orjson

from .events import check_name

__all__ = ["new_run_id", "create_run_dir", "write_json_atomic", "write_meta", "read_meta", "META_FILE"]

META_FILE = "meta.json"
JOURNAL_FILE = "journal.jsonl"
ARTIFACTS_DIR = "artifacts"
FIGURES_DIR = "figures"


def new_run_id(run_name: str | None, now: _dt.datetime | None = None) -> str:
    """`{run_name}_{YYYYmmdd_HHMMSS}_{6 hex}`: readable, sortable, and unique within one second."""
    name = "run" if run_name is None else check_name(run_name, "run_name", allow_subdirs=False)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d_%H%M%S")
    return f"{name}_{stamp}_{secrets.token_hex(3)}"


def create_run_dir(base_dir: str | os.PathLike, run_id: str) -> Path:
    """Create `{base_dir}/{run_id}/` with its sub-folders; refuses to reuse an existing one."""
    run_dir = Path(base_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / ARTIFACTS_DIR).mkdir()
    (run_dir / FIGURES_DIR).mkdir()
    return run_dir


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, 0-d tensors
        return value.tolist()
    return str(value)


def dumps(value: Any, indent: bool = True) -> bytes:
    """orjson with a fallback for what JSON has no type for (paths, numpy, sets: as text or lists)."""
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(value, default=_default, option=option | orjson.OPT_NON_STR_KEYS)


def write_json_atomic(path: Path, value: Any, raw: bytes | None = None) -> None:
    """Replace `path` with `value` as JSON so that a reader sees the old or the new file, never half."""
    data = dumps(value) if raw is None else raw
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def base_meta(run_id: str, run_name: str | None, experiment: str, start_time: float) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "run_name": run_name or "run",
        "experiment": experiment,
        "status": "RUNNING",
        "start_time": start_time,
        "end_time": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "tags": {},
        "sinks": {},
    }


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    write_json_atomic(run_dir / META_FILE, meta)


def read_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    return orjson.loads((Path(run_dir) / META_FILE).read_bytes())
