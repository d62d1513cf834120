"""The TensorBoard sink (`TensorBoardSink`), split the way tensorboardX splits its writer.

Imported on whichever thread builds a sink; each module says which thread runs it:

- `sink`: `TensorBoardSink`, the sink contract (in the delivery agent, or on the caller's thread in sync mode);
- `event_file`: `_EventFile`, whole appends batched into few writes (the sink's thread);
- `records`: TFRecord framing and the event records, protobuf by hand (the sink's thread).
"""
from __future__ import annotations

import logging

# Not `records.CONFIG_TAG`: importing `records` needs the extra, and this package must import
# without it (the sink names what to install when it is built).
from .sink import TAG_PREFIX, TENSORBOARD_DIR, TensorBoardSink

__all__ = ["TensorBoardSink", "TENSORBOARD_DIR", "TAG_PREFIX"]

_logger = logging.getLogger(__name__)
