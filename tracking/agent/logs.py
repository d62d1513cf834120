"""What an agent process says goes to its training process: log records and warnings, over the channel.

Runs in an agent process (`tracking.agent.__main__` installs both), on whichever thread logs or
warns (the loop, a worker thread in a sink call). While the training process is there, a record
goes to its logger of the same name (`protocol.LogRecord`) and a warning is raised there again
(`protocol.AgentWarning`); once it is gone, both go to stderr, as Python would print them.
"""
from __future__ import annotations

import logging
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any

from .protocol import AgentWarning, LogRecord

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["ChannelLogHandler", "WarningForwarder"]

#: occurrences of one warning (category, text, place) an agent forwards; the training process's
#: filters decide which it shows, as they would in one process ("default": the first)
_MAX_WARNINGS_FORWARDED = 100


class ChannelLogHandler(logging.Handler):
    """Sends the agent's log records to the training process, which handles them as its own."""

    def __init__(self, agent: Agent) -> None:
        super().__init__()
        self._agent = agent

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(_in_emit, "active", False):
            return
        _in_emit.active = True
        try:
            exc_text = _EXC_FORMATTER.formatException(record.exc_info) if record.exc_info else None
            if self._agent.channel_open:
                self._agent.send(LogRecord.of(record, exc_text))
            else:
                message = record.getMessage() + (f"\n{exc_text}" if exc_text else "")
                sys.stderr.write(f"{record.levelname} {record.name}: {message}\n")
        except Exception:
            self.handleError(record)
        finally:
            _in_emit.active = False


_in_emit = threading.local()
_EXC_FORMATTER = logging.Formatter()
_show_warning = warnings.showwarning  # Python's own, for when the training process is gone


class WarningForwarder:
    """`warnings.showwarning` in an agent process: the training process warns it again, where its
    filters (and its once-per-place registries) decide; once it is gone, stderr."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._seen: dict[tuple, int] = {}  # how often each warning was forwarded

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
        if not self._agent.channel_open:
            _show_warning(message, category, filename, lineno, file, line)
            return
        key = (category, str(message), filename, lineno)
        self._seen[key] = seen = self._seen.get(key, 0) + 1
        if seen > _MAX_WARNINGS_FORWARDED:
            return  # the same warning again and again (a library's, every batch): enough said
        self._agent.send(AgentWarning.of(message, category, filename, lineno, _module_of(filename)))


def _module_of(filename: str) -> str | None:
    """The name of the imported module whose file is `filename` (what warning filters match)."""
    for name, module in list(sys.modules.items()):
        try:
            if getattr(module, "__file__", None) == filename:
                return name
        except Exception:  # a lazy module that raises on any attribute: not this one
            continue
    return None
