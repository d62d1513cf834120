"""Replay: deliver to one sink what it has not received of a run, from the journal, by the engine.

Runs on the main thread of `python -m tracking replay` (or wherever `replay()` is called). It needs
no live process of the run: it claims the sink's delivery lock (refusing if a live agent still
serves that sink), resumes from the sink's committed cursor, and streams the journal in bounded
chunks, so memory stays flat however long the run was. Failing calls are retried with back-off
until `timeout_s`; then it stops with a `ReplayError` whose message is one line, and nothing it
did not deliver is marked delivered.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ReplayError, SinkBusyError
from ..journal import JournalReader
from ..journal.reader import DEFAULT_CHUNK_EVENTS
from ..journal.rundir import read_meta, write_meta
from ..sinks import resolve_sink
from ..sinks.base import RunContext, Sink
from .cursors import DeliveryStore, nobody_delivers
from .engine import Outcome, RetryPolicy, SinkSlot

__all__ = ["replay", "ReplayResult", "DEFAULT_REPLAY_TIMEOUT_S"]

#: how long a replay keeps retrying a failing sink before it gives up
DEFAULT_REPLAY_TIMEOUT_S = 30.0
_RETRY = RetryPolicy(initial_s=0.5, max_s=5.0)


@dataclass(frozen=True)
class ReplayResult:
    sink: str
    sent: int  #: events delivered (or refused by the sink for good) by this replay
    rejected: int
    last_seq: int
    lost: int = 0  #: journaled events this replay passed over because their line is unreadable


def replay(run_dir: str | os.PathLike, sink_name: str, tracking_uri: str | None = None,
           timeout_s: float = DEFAULT_REPLAY_TIMEOUT_S, chunk_events: int = DEFAULT_CHUNK_EVENTS) -> ReplayResult:
    """Deliver the events `sink_name` has not received yet; raises ReplayError if it can't.

    Replaying twice sends nothing twice: the sink's cursor is committed after every chunk.
    """
    run_dir = Path(run_dir)
    try:
        meta = read_meta(run_dir)
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{run_dir} is not a run directory with a readable meta.json ({exc})") from None
    reader = JournalReader(run_dir)
    last = reader.refresh()
    sink = _build_sink(sink_name, tracking_uri, meta)
    orphaned = nobody_delivers(run_dir, meta)  # before our own claim names a live process
    store = DeliveryStore(run_dir)
    try:
        store.claim(sink.name)
    except SinkBusyError as exc:
        raise ReplayError(str(exc)) from None
    try:
        return _deliver(run_dir, meta, reader, last, sink, store, timeout_s, chunk_events, orphaned)
    finally:
        store.release_all()


def _build_sink(name: str, tracking_uri: str | None, meta: dict[str, Any]) -> Sink:
    try:
        if name == "mlflow":
            from ..sinks.mlflow import MLflowSink

            if tracking_uri is None and "***" not in str(meta.get("tracking_uri", "***")):
                tracking_uri = meta["tracking_uri"]  # the run's own store (a redacted one must be given)
            return MLflowSink(tracking_uri=tracking_uri)
        return resolve_sink(name)
    except (ImportError, ValueError, TypeError, LookupError) as exc:
        raise ReplayError(f"cannot build sink {name!r}: {exc}") from None


def _deliver(run_dir: Path, meta: dict[str, Any], reader: JournalReader, last: int, sink: Sink,
             store: DeliveryStore, timeout_s: float, chunk_events: int, orphaned: bool) -> ReplayResult:
    legacy = (meta.get("sinks") or {}).get(sink.name)  # runs recorded before delivery/ existed
    if legacy:
        legacy = {**legacy, "committed_seq": legacy.get("committed_seq", legacy.get("delivered_seq", 0))}
    run = RunContext(
        run_id=meta["run_id"], run_name=meta.get("run_name", "run"), run_dir=run_dir,
        experiment=meta.get("experiment", "Default"), config=reader.header.get("config", {}),
        start_time=meta.get("start_time", 0.0), mode="replay",
    )
    saved = store.load(sink.name) or legacy or {}
    if int(saved.get("committed_seq", 0)) >= last and saved.get("state") == "closed":
        return ReplayResult(sink.name, 0, 0, last)  # it has everything, and was closed with the run
    slot = SinkSlot(sink, run, retry=_RETRY, store=store, placement="replay", saved=legacy)
    start = (slot.delivered, slot.rejected, slot.lost)
    deadline = time.monotonic() + timeout_s
    _until_delivered(slot, slot.open, deadline)
    while slot.delivered_seq < last:
        _until_delivered(slot, lambda: slot.deliver_from(reader, last, chunk_events), deadline)
        _until_delivered(slot, slot.commit, deadline)
    status = reader.end_status or _status_of(meta)
    _until_delivered(slot, lambda: slot.close(status), deadline)
    sinks = meta.setdefault("sinks", {})
    sinks[sink.name] = {**slot.report(last), "replayed": True}
    meta.update({k: v for k, v in slot.facts.items()})
    if orphaned and all((report or {}).get("closed") for report in sinks.values()):
        # The last of a run nothing delivered any more: its status is what the journal says.
        meta.pop("pending_status", None)
        meta.update(status=status, events=last, end_time=meta.get("end_time") or reader.end_time or time.time())
    write_meta(run_dir, meta)
    delivered, rejected, lost = (slot.delivered - start[0], slot.rejected - start[1], slot.lost - start[2])
    return ReplayResult(sink.name, delivered + rejected, rejected, last, lost)


def _until_delivered(slot: SinkSlot, call: Any, deadline: float) -> None:
    """Retry `call` with the slot's back-off until it is delivered; ReplayError at the deadline."""
    while True:
        outcome = call()
        if outcome is Outcome.DELIVERED:
            return
        if outcome is Outcome.GAVE_UP:
            raise ReplayError(f"sink {slot.name!r} gave up: {slot.last_error}")
        wait = slot.retry_at - time.monotonic()
        if time.monotonic() + max(wait, 0) >= deadline:
            raise ReplayError(f"sink {slot.name!r} still failing when the deadline passed "
                              f"({slot.errors} errors, last: {slot.last_error}); run the replay again later")
        time.sleep(max(wait, 0))


def _status_of(meta: dict[str, Any]) -> str:
    """The status to close a sink with when the journal has no end line."""
    status = meta.get("status")
    if status in ("FINISHED", "FAILED", "KILLED"):
        return status
    return "KILLED"  # RUNNING in meta and no end line: the run's process died
