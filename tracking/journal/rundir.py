"""The run directory: run ids, the folder layout, and the run meta file.

`create_run_dir` runs on the caller's thread inside `start_run()`; `write_meta` runs there once;
`finish_meta` runs where the run's delivery ends: the caller's thread at `end_run()`, or the delivery
agent when it finishes a run alone (the training process died, or `end_run(background=True)`).

Layout of `{base_dir}/{run_id}/`:

    meta.json          name, experiment, tags, status, start/end time, host, pid, sink reports
    journal.jsonl      every event of the run, in order (see `tracking.journal`)
    config.json        written by the JSON sink
    metrics.json       written by the JSON sink
    step_metrics.csv   written by the JSON sink at run end
    artifacts/         snapshots taken by `log_artifact`
    figures/           PNGs from `log_figure`
    tensorboard/       written by the TensorBoard sink
    delivery/          how far each sink has got, and who delivers to it (see `tracking.delivery.cursors`)
"""
from __future__ import annotations

import datetime as _dt
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from ..core.names import check_name

__all__ = ["new_run_id", "create_run_dir", "write_json_atomic", "write_meta", "read_meta", "finish_meta", "json_default", "dumps",
           "META_FILE", "JOURNAL_FILE", "ARTIFACTS_DIR", "FIGURES_DIR", "DELIVERY_DIR"]

META_FILE = "meta.json"
JOURNAL_FILE = "journal.jsonl"
ARTIFACTS_DIR = "artifacts"
FIGURES_DIR = "figures"
DELIVERY_DIR = "delivery"
#: what a run id adds to the run name: `_YYYYmmdd_HHMMSS_abcdef`
_RUN_ID_SUFFIX_BYTES = 23


def new_run_id(run_name: str | None, now: _dt.datetime | None = None) -> str:
    """`{run_name}_{YYYYmmdd_HHMMSS}_{6 hex}`: readable, sortable, and unique within one second."""
    name = "run" if run_name is None else check_name(run_name, "run_name", allow_subdirs=False,
                                                     reserve_bytes=_RUN_ID_SUFFIX_BYTES)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d_%H%M%S")
    return f"{name}_{stamp}_{secrets.token_hex(3)}"


def create_run_dir(base_dir: str | os.PathLike, run_id: str) -> Path:
    """Create `{base_dir}/{run_id}/` with its sub-folders; refuses to reuse an existing one."""
    run_dir = Path(base_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / ARTIFACTS_DIR).mkdir()
    (run_dir / FIGURES_DIR).mkdir()
    return run_dir


def json_default(value: Any) -> Any:
    """What orjson should write for a value JSON has no type for: lists for sets and arrays, else text."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, 0-d tensors
        return value.tolist()
    return str(value)


def dumps(value: Any, indent: bool = True) -> bytes:
    """orjson with a fallback for what JSON has no type for (paths, numpy, sets: as text or lists)."""
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(value, default=json_default, option=option | orjson.OPT_NON_STR_KEYS)


def write_json_atomic(path: Path, value: Any, raw: bytes | None = None) -> None:
    """Replace `path` with `value` as JSON so that a reader sees the old or the new file, never half."""
    data = dumps(value) if raw is None else raw
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:  # a full disk: leave the old file, and no half-written copy beside it
        tmp.unlink(missing_ok=True)
        raise


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


def finish_meta(
    run_dir: str | os.PathLike,
    status: str,
    events: int,
    sinks: dict[str, dict[str, Any]],
    timed_out: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Write a run's final meta.json: its status, its event count, and where each sink got to.

    Called by whoever finishes the run's delivery: the tracker at `end_run`, or an agent that
    finishes it alone (the training process died, or `end_run(background=True)`). `sinks` are the
    reports of the sinks this caller served; other sinks' entries already in the file are kept.
    The facts sinks reported (e.g. `mlflow_run_id`) also go at the top level, where users look.
    """
    run_dir = Path(run_dir)
    try:
        meta = read_meta(run_dir)
    except (OSError, ValueError):
        meta = {}
    merged = dict(meta.get("sinks") or {})
    merged.update(sinks)
    for report in sinks.values():
        meta.update({k: v for k, v in report.items() if k not in _SINK_REPORT_KEYS})
    meta.update(extra)
    meta.pop("pending_status", None)
    meta.update(status=status, events=events, sinks=merged, delivery_timed_out=timed_out)
    meta.setdefault("end_time", None)
    if meta["end_time"] is None:
        meta["end_time"] = time.time()
    write_meta(run_dir, meta)
    return meta


#: the keys of a sink's report that describe delivery; the others are facts the sink returned
_SINK_REPORT_KEYS = frozenset({
    "delivered", "delivered_seq", "committed_seq", "undelivered", "rejected", "lost", "errors", "last_error",
    "journal_chunks", "state", "closed", "placement",
})
