"""Per-sink delivery state on disk: `{run_dir}/delivery/{sink}.json`, and who may deliver to a sink.

Written by whoever delivers a run to that sink (the agent, sync mode on the caller's thread,
`python -m tracking replay`), each file by one writer at a time: `claim()` takes an exclusive
`flock` on `{sink}.lock` that the kernel releases when its holder dies, so a new agent can take
over from a killed one, and replay refuses a sink that a live agent still serves. Read by anyone
(`stats()`, `python -m tracking show`).

Besides, `{sink}.seq` holds the sink's live cursor (how far it has been handed events), rewritten
in place after every write so that `stats()` can read it without asking the agent.

A state file says how far the sink has got for sure: `delivered_seq` is *committed* (the sink
flushed every event up to it), with the sink's `checkpoint` from that moment (TensorBoard: the
event file's size) and the facts its `open` returned (MLflow: the run id). A new deliverer resumes
from there.
"""
from __future__ import annotations

import fcntl
import logging
import mmap
import os
import socket
import struct
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import SinkBusyError
from ..journal.rundir import DELIVERY_DIR, write_json_atomic

__all__ = ["DeliveryStore", "nobody_delivers"]

_logger = logging.getLogger(__name__)

_SEQ = struct.Struct("<Q")


class DeliveryStore:
    """The delivery state files of one run."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.dir = Path(run_dir) / DELIVERY_DIR
        self._locks: dict[str, int] = {}
        self._seq_fds: dict[str, int] = {}
        self._views: dict[str, mmap.mmap] = {}  # the live cursors, mapped by a reader

    def load(self, sink: str) -> dict[str, Any] | None:
        """The sink's last saved state, or None (never delivered, or unreadable)."""
        try:
            state = orjson.loads((self.dir / f"{sink}.json").read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            _logger.warning("cannot read the delivery state of sink %r in %s (%s); it is "
                            "delivered from the start", sink, self.dir, exc)
            return None
        return state if isinstance(state, dict) else None

    def load_all(self) -> dict[str, dict[str, Any]]:
        """Every sink's saved state, by sink name."""
        states: dict[str, dict[str, Any]] = {}
        try:
            names = sorted(p.stem for p in self.dir.glob("*.json"))
        except OSError:
            return states
        for name in names:
            state = self.load(name)
            if state is not None:
                states[name] = state
        return states

    def save(self, sink: str, state: dict[str, Any]) -> None:
        """Replace the sink's state atomically; raises OSError if the disk refuses."""
        self.dir.mkdir(exist_ok=True)
        write_json_atomic(self.dir / f"{sink}.json", state)

    def deliverers(self) -> dict[str, int]:
        """The pid each sink's lock file names (its last deliverer, maybe gone), by sink name."""
        found: dict[str, int] = {}
        try:
            paths = sorted(self.dir.glob("*.lock"))
        except OSError:
            return found
        for path in paths:
            try:
                found[path.stem] = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                continue
        return found

    def claim(self, sink: str) -> None:
        """Become the sink's one deliverer for this run; raises SinkBusyError if a live process is."""
        if sink in self._locks:
            return
        self.dir.mkdir(exist_ok=True)
        fd = os.open(self.dir / f"{sink}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SinkBusyError(
                f"sink {sink!r} of {self.dir.parent} is being delivered by process {holder}; "
                "wait for it to finish (python -m tracking show says how far it is)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._locks[sink] = fd

    # -- the live cursor: how far a sink has been handed events, for stats() -------------------

    def publish(self, sink: str, seq: int) -> None:
        """Write the sink's live cursor (8 bytes in `{sink}.seq`): one pwrite, no message, no wake-up.

        The agent does it after each write; `stats()` in the training process reads it (`peek`)."""
        fd = self._seq_fds.get(sink)
        try:
            if fd is None:
                self.dir.mkdir(exist_ok=True)
                fd = self._seq_fds[sink] = os.open(self.dir / f"{sink}.seq", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                                   0o644)
            os.pwrite(fd, _SEQ.pack(seq), 0)
        except OSError:
            pass  # a full disk: stats() falls back to the agent's last report

    def peek(self, sink: str) -> int | None:
        """The sink's live cursor, or None if none was published yet.

        The file is mapped once, so a read is a memory read: `stats()` may be called every step.
        """
        view = self._views.get(sink)
        if view is None:
            try:
                with open(self.dir / f"{sink}.seq", "rb") as fh:
                    view = self._views[sink] = mmap.mmap(fh.fileno(), _SEQ.size, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # not there yet, or not 8 bytes yet
                return None
        return _SEQ.unpack_from(view)[0]

    def release(self, sink: str) -> None:
        fd = self._locks.pop(sink, None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock
        seq_fd = self._seq_fds.pop(sink, None)
        if seq_fd is not None:
            os.close(seq_fd)

    def release_all(self) -> None:
        for sink in list(self._locks):
            self.release(sink)

    def close_views(self) -> None:
        for view in self._views.values():
            view.close()
        self._views = {}

    def forget_after_fork(self) -> None:
        """In a forked child: the locks are the parent's. The child closes its copies of their
        descriptors (a flock lasts while any copy is open) and never touches them again."""
        for fd in (*self._locks.values(), *self._seq_fds.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self._locks, self._seq_fds, self._views = {}, {}, {}


def nobody_delivers(run_dir: str | os.PathLike, meta: dict[str, Any]) -> bool:
    """True for a run not ended, whose training process is gone and that no live process delivers:
    an agent that could not start, or died with its training process. Only replay delivers it now.

    Known for runs of this host only (pids mean nothing elsewhere): False for another host's."""
    if meta.get("status") != "RUNNING" or meta.get("host") != socket.gethostname():
        return False
    pids = [meta.get("pid"), *DeliveryStore(run_dir).deliverers().values()]
    return not any(_alive(pid) for pid in pids if isinstance(pid, int) and pid > 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:  # a zombie delivers nothing
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
