"""`TrackerHandle`: the tracker a framework adapter records through, and who closes it.

Runs on the caller's thread (the framework's training loop). A tracker given to an adapter stays
the caller's: the adapter ends the runs it recorded and leaves the tracker open. A tracker the
adapter builds from a preset is the adapter's: it is closed when the run ends, so no thread of ours
outlives the training. Pickled (a spawn launcher, a checkpoint that holds the trainer), a handle
keeps how to build a tracker, never the tracker: the copy builds its own when first used.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from ..presets import TRACKERS, create_tracker
from ..tracker import RunState, Tracker

__all__ = ["TrackerHandle"]

#: the states in which using the handle starts a run (IDLE: none yet; ENDED: the last one ended)
_STARTABLE = (RunState.IDLE, RunState.ENDED, RunState.FORKED)


class TrackerHandle:
    """A given tracker, or a preset ("local", "mlflow", "dual") built under `base_dir` when first used."""

    def __init__(self, tracker: Tracker | None, preset: str, base_dir: str | os.PathLike,
                 preset_kwargs: Mapping[str, Any]) -> None:
        if tracker is not None and not isinstance(tracker, Tracker):
            raise TypeError(f"tracker must be one of our trackers (tracking.Tracker), got {type(tracker).__name__}")
        if preset not in TRACKERS:
            raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(TRACKERS)}")
        self.preset = preset
        self.base_dir = os.fspath(tracker.base_dir if tracker is not None else base_dir)
        self.preset_kwargs = dict(preset_kwargs)
        self.tracker = tracker
        self.owned = tracker is None
        self.run_id: str | None = None  #: the run this handle recorded into last
        self._started: str | None = None  # the run this handle started (the only one it ends)

    def get(self) -> Tracker:
        """The tracker, built from the preset if there is none."""
        if self.tracker is None:
            kwargs = dict(self.preset_kwargs)
            kwargs.setdefault("local_base_dir" if self.preset == "dual" else "base_dir", self.base_dir)
            self.tracker = create_tracker(self.preset, **kwargs)
            self.owned = True
        return self.tracker

    def started(self, run_name: str | None = None, config: Mapping[str, Any] | None = None) -> Tracker:
        """The tracker with a run going: a new one unless a run is going already (a given tracker's
        own run is recorded into)."""
        tracker = self.get()
        if tracker.state in _STARTABLE:
            self._started = tracker.start_run(run_name, config=config)
        self.run_id = tracker.run_id
        return tracker

    def end(self, status: str) -> None:
        """End the run this handle started (if it is still going: a run the caller started is the
        caller's to end); close an owned tracker."""
        tracker = self.tracker
        if tracker is None:
            return
        if self._started is not None and tracker.run_id == self._started and tracker.state is RunState.RUNNING:
            tracker.end_run(status)
        if self.owned:
            tracker.close()
            self.tracker = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "tracker": None, "owned": True, "run_id": None, "_started": None}
