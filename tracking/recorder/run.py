"""An active run's parts, wired in one direction: log calls -> journal -> delivery -> sinks.

Built and driven on the caller's thread by `Tracker` (start_run, flush, end_run, stats); `emit`
is the log calls' way in, on any thread. `AsyncRun` owns the writer thread and talks to the
tracker's delivery agents (`tracking.recorder.link`); `SyncRun` runs the same engine inline.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..delivery.cursors import DeliveryStore
from ..delivery.engine import RetryPolicy, replay_command
from ..delivery.inline import InlineDelivery
from .link import AgentLink
from ..agent.protocol import EndRun
from .queue import BLOCK, INITIAL_EVENT_BYTES
from ..journal.rundir import finish_meta, read_meta, write_meta
from .batch import RunJournal
from ..sinks.base import RunContext, Sink
from .stats import RunReport, TrackerStats

__all__ = ["AsyncRun", "SyncRun", "RunSettings"]

_logger = logging.getLogger(__name__)

#: how much longer than its own deadline the tracker waits for an agent's end-of-run answer
_ANSWER_MARGIN_S = 2.0


@dataclass(frozen=True)
class RunSettings:
    """The tracker's settings that a run's parts use."""

    memory_budget_bytes: int = 64 * 2**20
    full_queue_policy: str = BLOCK
    batch_interval_s: float = 0.05
    batch_max_events: int = 10_000
    journal_fsync_interval_s: float = 1.0
    commit_interval_s: float = 1.0
    retry: RetryPolicy = RetryPolicy()

    @property
    def hold_events(self) -> int:
        """Events held in memory while the journal's disk is full: about the queue's budget."""
        return max(self.memory_budget_bytes // INITIAL_EVENT_BYTES, 1000)


def _missing_report(last_seq: int, error: str) -> dict[str, Any]:
    return {"delivered": 0, "delivered_seq": 0, "committed_seq": 0, "undelivered": last_seq, "rejected": 0,
            "lost": 0, "errors": 0, "last_error": error, "journal_chunks": 0, "state": "unknown", "closed": False,
            "placement": "?"}


class AsyncRun:
    """Async mode: the writer thread journals, the agents deliver."""

    def __init__(self, run: RunContext, run_journal: RunJournal, links: Sequence[AgentLink],
                 sink_names: Sequence[str], settings: RunSettings,
                 owner_close: Callable[[], Any] | None = None) -> None:
        """`owner_close`: the tracker's close(), which a stop() on the writer thread calls (the
        thread keeps its tracker alive while the run is open, so the exit hook ends the run)."""
        from .writer_thread import WriterThread

        self.run, self.journal, self.links = run, run_journal, list(links)
        self.sink_names = list(sink_names)
        self._store = DeliveryStore(run.run_dir)  # read only: the agents write it
        self.writer = WriterThread(run_journal, [link.wake for link in self.links], settings.memory_budget_bytes,
                                   settings.full_queue_policy, settings.batch_interval_s, settings.batch_max_events)
        if owner_close is not None:
            self.writer.thread.stop_with(owner_close)
        for link in self.links:
            link.start()
            link.open_run(run)
        self.writer.start()
        self.emit: Callable[[Any], None] = self.writer.queue.put

    def flush(self, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        marker = self.writer.request_flush(timeout_s)
        if marker is None or not marker.complete:
            return False
        waiters = [(link, link.flush(self.run.run_id, marker.seq)) for link in self.links]
        for index, (_, waiter) in enumerate(waiters):
            answer = waiter.wait(None if deadline is None else deadline - time.monotonic())
            if answer is None or not answer.ok:
                for link, unanswered in waiters[index:]:  # not asked again of a restarted agent
                    if unanswered.answer is None:
                        link.forget_flush(unanswered)
                return False
        return True

    def end(self, status: str, timeout_s: float, background: bool, wait_s: float = 0.0) -> RunReport:
        """Journal the rest and end the run. `background`: the agent process finishes it alone;
        `wait_s`: how long to wait for it to be done all the same (the exit hook's bounded wait)."""
        deadline = time.monotonic() + timeout_s
        last_seq = self._close_journal(status, timeout_s)
        extra = {"dropped": self.writer.queue.dropped, "tags": dict(self.journal.tags),
                 "unrecorded": self.journal.unrecorded + self.writer.unrecorded, "end_time": time.time()}
        if background:
            return self._end_in_background(status, last_seq, deadline, extra, wait_s)
        waiters = [(link, link.end_run(EndRun(self.run.run_id, status, last_seq, max(deadline - time.monotonic(), 0))))
                   for link in self.links]
        sinks: dict[str, dict[str, Any]] = {}
        timed_out = False
        for link, waiter in waiters:
            answer = waiter.wait(max(deadline - time.monotonic(), 0) + _ANSWER_MARGIN_S)
            if answer is None:
                timed_out = True
                link.forget_run(self.run.run_id)
                sinks.update(link.progress(self.run.run_id))
            else:
                timed_out |= answer.timed_out
                sinks.update(answer.sinks)
        sinks = self._complete(sinks, last_seq)
        _finish_meta(self.run, status, last_seq, sinks, timed_out, **extra)
        self._store.close_views()
        return _report(self.run, status, last_seq, extra, sinks, timed_out)

    def _close_journal(self, status: str, timeout_s: float) -> int:
        """Journal what is queued and write the end line; the caller does it if the writer is dead."""
        stop = self.writer.request_stop(status, timeout_s)
        if stop is not None:
            return stop.seq
        if not self.writer.is_alive():  # it crashed (logged): journal what is still queued, here
            queued = [item for item in self.writer.queue.drain(len(self.writer.queue)) if type(item) is tuple]
            if queued:
                self.journal.record(queued)
            self.journal.close(status)
            for link in self.links:
                link.wake()
        return self.journal.last_seq

    def _end_in_background(self, status: str, last_seq: int, deadline: float, extra: dict[str, Any],
                           wait_s: float) -> RunReport:
        """Sinks served in this process are waited for; the agent process finishes the rest alone
        (the link keeps the request until it is answered: a restarted agent gets it again)."""
        process = [link for link in self.links if link.kind == "process"]
        local = [link for link in self.links if link.kind != "process"]
        done: dict[str, dict[str, Any]] = {}
        for link in local:
            answer = link.end_run(EndRun(self.run.run_id, status, last_seq, max(deadline - time.monotonic(), 0))).wait(
                max(deadline - time.monotonic(), 0) + _ANSWER_MARGIN_S)
            done.update(answer.sinks if answer is not None else link.progress(self.run.run_id))
        if not process:
            sinks = self._complete(done, last_seq)
            _finish_meta(self.run, status, last_seq, sinks, False, **extra)
            return _report(self.run, status, last_seq, extra, sinks, False)
        _pending_meta(self.run, status, last_seq, extra["end_time"])
        waiters = [link.end_run(EndRun(self.run.run_id, status, last_seq, 0.0, background=True,
                                       meta={**extra, "other_sinks": done}))
                   for link in process]
        answers = [waiter.wait(wait_s) for waiter in waiters]
        sinks = dict(done)
        for link, answer in zip(process, answers):
            sinks.update(answer.sinks if answer is not None else link.progress(self.run.run_id))
        report = _report(self.run, status, last_seq, extra, self._complete(sinks, last_seq),
                         any(answer is not None and answer.timed_out for answer in answers))
        if any(answer is None for answer in answers):  # still at it: it writes the final meta.json
            report.background, report.replay_commands = True, []
        self._store.close_views()
        return report

    def _complete(self, sinks: dict[str, dict[str, Any]], last_seq: int) -> dict[str, dict[str, Any]]:
        """Every sink of the tracker has a report, also one no agent could build or answer for."""
        errors = {name: error for link in self.links for name, error in link.config_errors.items()}
        out = {}
        for name in self.sink_names:
            report = sinks.get(name)
            if report is None:
                report = _missing_report(last_seq, errors.get(name, "no report from its delivery agent"))
            out[name] = {**report, "undelivered": max(last_seq - int(report.get("committed_seq", 0)), 0)}
        return out

    def stats(self) -> TrackerStats:
        sinks: dict[str, dict[str, Any]] = {}
        for link in self.links:
            sinks.update(link.progress(self.run.run_id))
        queue, last = self.writer.queue, self.journal.last_seq
        sinks = self._complete(sinks, last)
        for name, report in sinks.items():  # the live cursors: fresher than the agent's last report
            seq = self._store.peek(name)
            if seq is not None and seq > report["delivered_seq"]:
                report["delivered_seq"] = seq
        agent_pid = next((link.pid for link in self.links if link.kind == "process"), None)
        return TrackerStats.of(sinks, last, queue_depth=len(queue), held=self.journal.held, dropped=queue.dropped,
                               writer_lag_s=self.writer.lag_s, journal_errors=self.journal.errors, agent_pid=agent_pid)

    def forget_after_fork(self) -> None:
        self.writer.queue.discard_all()
        for link in self.links:
            link.forget_after_fork()


class SyncRun:
    """Sync mode: the journal and every sink inside each log call (the baseline)."""

    def __init__(self, run: RunContext, run_journal: RunJournal, sinks: Sequence[tuple[Sink, Any]],
                 settings: RunSettings) -> None:
        self.run, self.journal = run, run_journal
        self.delivery = InlineDelivery(run_journal, sinks, run, settings.retry, settings.commit_interval_s)
        self.emit: Callable[[Any], None] = self.delivery.emit

    def flush(self, timeout_s: float | None) -> bool:
        return self.delivery.flush(timeout_s)

    def end(self, status: str, timeout_s: float, background: bool, wait_s: float = 0.0) -> RunReport:
        last_seq, sinks, timed_out = self.delivery.stop(status, timeout_s)
        extra = {"dropped": 0, "tags": dict(self.journal.tags), "unrecorded": self.journal.unrecorded,
                 "end_time": time.time()}
        _finish_meta(self.run, status, last_seq, sinks, timed_out, **extra)
        return _report(self.run, status, last_seq, extra, sinks, timed_out)

    def stats(self) -> TrackerStats:
        last = self.journal.last_seq
        sinks = {slot.name: slot.report(last) for slot in self.delivery.slots}
        return TrackerStats.of(sinks, last, held=self.journal.held, journal_errors=self.journal.errors)

    def forget_after_fork(self) -> None:
        self.delivery.store.forget_after_fork()


def _finish_meta(run: RunContext, status: str, last_seq: int, sinks: dict[str, dict[str, Any]], timed_out: bool,
                 **extra: Any) -> None:
    """The run's final meta.json; a disk that refuses it costs that file, never the end of the run."""
    try:
        finish_meta(run.run_dir, status, last_seq, sinks, timed_out, **extra)
    except OSError as exc:
        _meta_refused(run, exc)


def _pending_meta(run: RunContext, status: str, last_seq: int, end_time: float) -> None:
    """meta.json while the agent finishes the run in the background: the status it will get."""
    try:
        meta = read_meta(run.run_dir)
        meta.update(pending_status=status, end_time=end_time, events=last_seq)
        write_meta(run.run_dir, meta)
    except (OSError, ValueError) as exc:
        _meta_refused(run, exc)


def _meta_refused(run: RunContext, exc: BaseException) -> None:
    _logger.error("cannot write %s/meta.json (%s); the run ended all the same, and its journal holds what "
                  "was logged (python -m tracking show %s)", run.run_dir, exc, run.run_dir)


def _report(run: RunContext, status: str, last_seq: int, extra: dict[str, Any],
            sinks: dict[str, dict[str, Any]], timed_out: bool) -> RunReport:
    report = RunReport(run_id=run.run_id, run_dir=Path(run.run_dir), status=status, events=last_seq,
                       dropped=extra["dropped"], sinks=sinks, timed_out=timed_out, unrecorded=extra["unrecorded"])
    report.replay_commands = [replay_command(run.run_dir, name) for name, s in sinks.items() if s["undelivered"]]
    return report
