"""The delivery agent: reads a run's journal and feeds the sinks, away from the training loop.

Runs in its own process (`python -m tracking.agent`), started by the tracker's first `start_run`;
on a thread of the training process where no process can be started, or for sinks that can't leave
it. The same engine (`engine.SinkSlot`) delivers in sync mode (`inline`) and in `python -m tracking
replay` (`replay`). Modules:

    engine     one sink's delivery of one run: its cursor, its calls, their outcomes
    cursors    the per-sink delivery state files, and who may deliver to a sink
    service    the agent's event loop: runs, fresh events, one task per sink
    link       the training process's handle on an agent (start, restart, requests)
    protocol   the messages between the two
    specs      how a sink is described to the agent that builds it
    inline     sync mode
    replay     replay
"""
from __future__ import annotations

from ..delivery.engine import Outcome, RetryPolicy, SinkSlot, SlotState

__all__ = ["Outcome", "RetryPolicy", "SinkSlot", "SlotState"]
