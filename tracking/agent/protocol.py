"""The messages between a training process and its delivery agent, over the agent's control channel.

Built on whichever thread sends them (the tracker's caller threads, the link's reader thread, the
agent's event loop) and pickled by `tracking.core.channel`. Plain frozen dataclasses: the channel carries
only these, so what the two sides say to each other is all here.

Besides the channel, the agent has a wake pipe: the writer thread writes a byte to it after each
journal append. The agent then reads the journal itself, so events never travel over the channel.
"""
from __future__ import annotations

import builtins
import logging
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..sinks.base import RunContext
from ..delivery.engine import RetryPolicy
from ..delivery.specs import SinkSpec

__all__ = [
    "AgentOptions", "Configure", "OpenRun", "Flush", "EndRun", "Shutdown",
    "Configured", "Progress", "Flushed", "Ended", "LogRecord", "AgentWarning",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentOptions:
    """How an agent delivers (the tracker's settings that concern it)."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: how often a sink's cursor is committed while events flow (also at every flush and at the end)
    commit_interval_s: float = 1.0
    #: how often, at most, the agent reads what the writer appended and hands it to the sinks
    #: (flush and end_run do not wait for it): a round has a fixed cost (file reads, sink calls)
    #: that 100 ms rounds spread over a few thousand events
    delivery_interval_s: float = 0.1
    #: fresh events kept decoded in memory for sinks that keep up; a sink further behind reads the
    #: journal on its own
    max_sink_backlog_events: int = 100_000
    #: how long an agent left alone (the training process died, or `end_run(background=True)`)
    #: keeps delivering before it gives up on a sink
    catch_up_timeout_s: float = 600.0


# -- training process -> agent -------------------------------------------------------------------

@dataclass(frozen=True)
class Configure:
    """The first message: the sinks to build (once; they serve every run) and the options."""

    sinks: tuple[SinkSpec, ...]
    options: AgentOptions
    parent_pid: int
    #: the training process's effective levels of the root ("") and the "tracking" loggers: the
    #: agent's loggers take them, and it sends the records that pass them
    log_levels: dict[str, int] = field(default_factory=lambda: {"": logging.WARNING, "tracking": logging.WARNING})


@dataclass(frozen=True)
class OpenRun:
    """Start delivering a run (again, for a restarted agent: each sink resumes from its committed
    cursor on disk)."""

    run: RunContext


@dataclass(frozen=True)
class Flush:
    """Answer with `Flushed` once every healthy sink has committed everything up to `seq`."""

    token: int
    run_id: str
    seq: int


@dataclass(frozen=True)
class EndRun:
    """The run's journal is complete: deliver the rest, close the sinks with `status`, answer `Ended`.

    timeout_s: the end-of-run deadline; sinks not done by then are left (their events wait in the
        journal). background: the tracker does not wait; the agent writes the final meta.json.
    meta: what the agent needs to write meta.json when it is the one that finishes the run.
    """

    run_id: str
    status: str
    final_seq: int
    timeout_s: float
    background: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Shutdown:
    """Exit once every run being ended is done (bounded by their deadlines)."""


# -- agent -> training process -------------------------------------------------------------------

@dataclass(frozen=True)
class Configured:
    """The sinks are built; `errors`: sinks that could not be built here, with why."""

    pid: int
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """Where each sink of a run stands (after each commit): `stats()` reads the latest."""

    run_id: str
    sinks: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Flushed:
    token: int
    run_id: str
    ok: bool
    sinks: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Ended:
    run_id: str
    sinks: dict[str, dict[str, Any]]
    timed_out: bool


@dataclass(frozen=True)
class LogRecord:
    """A log record of the agent's, handled in the training process by the logger of its name, as
    `logging.handlers.SocketHandler` records are: name, level, time, place and pid kept."""

    attributes: dict[str, Any]

    @classmethod
    def of(cls, record: logging.LogRecord, exc_text: str | None = None) -> "LogRecord":
        """`record` as it can travel: the message formatted (with `exc_text`), plain values only."""
        message = record.getMessage()
        if exc_text:
            message = f"{message}\n{exc_text}"
        attributes = {k: v for k, v in record.__dict__.items() if type(v) in _PLAIN}
        attributes.update(msg=message, args=None, exc_info=None, exc_text=None)
        attributes.pop("message", None)
        return cls(attributes)

    def emit(self) -> None:
        """Hand the record to the training process's logger of its name (its level and handlers)."""
        record = logging.makeLogRecord(self.attributes)
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


@dataclass(frozen=True)
class AgentWarning:
    """A warning raised in the agent, raised again in the training process (filterable there)."""

    category: str  #: "module:qualname" of the warning's class
    builtin: str  #: the nearest built-in class it derives from: what it is where its own is not imported
    message: str
    filename: str
    lineno: int
    module: str | None  #: the module that warned, for filters' `module=` (None: taken from the filename)

    @classmethod
    def of(cls, message: Warning | str, category: type[Warning], filename: str, lineno: int,
           module: str | None) -> "AgentWarning":
        builtin = next(c.__name__ for c in category.__mro__ if c.__module__ == "builtins")
        return cls(f"{category.__module__}:{category.__qualname__}", builtin, str(message), filename, lineno, module)

    def warn(self, registry: dict[Any, Any]) -> None:
        """`warnings.warn_explicit` here, on the link's thread; a filter that makes it an error
        can't raise into the training loop from there, so that is logged instead."""
        category = _warning_class(self.category, self.builtin)
        try:
            warnings.warn_explicit(self.message, category, self.filename, self.lineno, module=self.module,
                                   registry=registry)
        except Warning as exc:  # the "error" action: nobody to raise it to
            _logger.warning("%s: %s (raised in the delivery agent)", type(exc).__name__, exc)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _warning_class(path: str, builtin: str) -> type[Warning]:
    """The warning class named "module:qualname" if this process has imported its module (nothing
    is imported for it here: not on the link's thread, not with a fork maybe under way), else the
    built-in class it derives from."""
    module, _, qualname = path.partition(":")
    found: Any = sys.modules.get(module)
    for part in qualname.split(".") if found is not None else ():
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Warning):
        return found
    fallback = getattr(builtins, builtin, UserWarning)
    return fallback if isinstance(fallback, type) and issubclass(fallback, Warning) else UserWarning
