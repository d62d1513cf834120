"""The run journal: every event of a run, in order, as JSON lines. The source of truth for delivery.

The training process writes it (`JournalWriter`, on its writer thread; on the caller's thread in
sync mode); the delivery agent, `python -m tracking replay` and the CLI read it (`JournalReader`).

File format (`journal.jsonl`), one JSON array per line:

    ["run", {run_id, run_name, experiment, config, start_time}]     the first line
    ["batch", first_seq, count, [event, event, ...]]                one line per drained batch
    ["end", status, timestamp]                                      the last line, when the run ends

Events are numbered from 1 in the order they were logged (their *seq*); the writer alone assigns
them, when a batch line is written whole. A batch line's first bytes say which seqs it holds, so a
reader finds its place without decoding lines (journals written before the count was added, as
`["batch", first_seq, [...]]`, are read too). Each event is its tuple as a JSON array (layouts in
`tracking.journal.events`): metrics as `["scalars", [keys], [values], step, time]` (journals of earlier
versions hold `["metrics", {key: value}, step, time]`, read too). A line per batch rather than per event: one `orjson` call per batch costs
~0.15 µs an event, one per event ~0.4 µs, and that CPU is the training process's. Non-finite metric
values are written as the strings "NaN", "Infinity" and "-Infinity" (JSON has no literal for them);
artifact and figure files and model folders are given relative to the run directory.

A write the disk refuses is cut off again, so the file always ends with a whole line; a torn last
line (a process killed mid-write) is ignored by readers, and a line that can't be decoded is
skipped with a warning and counted, never raised.
"""
from __future__ import annotations

from .rundir import JOURNAL_FILE
from .reader import JournalReader, read_journal
from .writer import JournalWriter

__all__ = ["JournalWriter", "JournalReader", "read_journal", "JOURNAL_FILE"]
