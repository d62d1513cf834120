"""The journal on the real file system: whole lines only, seq owned by the writer, a reader that
streams from any seq in bounded chunks and never raises for what it finds in the file."""
from __future__ import annotations

import errno
import logging
import math
import os

import pytest

from tracking.journal.events import ARTIFACT, METRICS, TAG, Metrics, Tag
from tracking.journal import JournalReader, JournalWriter, read_journal


def _metric(i: int) -> tuple:
    return (METRICS, {"x": float(i)}, i, 1000.0 + i)


def _write(run_dir, batches: list[int]) -> JournalWriter:
    writer = JournalWriter(run_dir, {"run_id": "r"}, fsync_interval_s=60)
    seq = 0
    for size in batches:
        first, written = writer.append([_metric(seq + i) for i in range(size)])
        assert first == seq + 1 and len(written) == size
        seq += size
    return writer


def test_seqs_follow_the_batches_and_a_reader_gets_any_range_back(tmp_path):
    writer = _write(tmp_path, [3, 1, 500, 7, 1, 1, 2000])
    writer.close("FINISHED")
    reader = JournalReader(tmp_path)
    assert reader.refresh() == 2513 and reader.end_status == "FINISHED" and reader.header == {"run_id": "r"}
    line_ends = {3, 4, 504, 511, 512, 513, 2513}  # the last seq of each batch line
    # (start, chunk, the seqs returned: whole lines from start, until chunk is reached)
    for start, chunk, last in [(1, 10, 504), (4, 1, 4), (5, 600, 2513), (503, 3, 511), (2500, 100, 2513),
                               (2513, 5, 2513)]:
        first, events = reader.read(start, chunk)
        assert first == start and last in line_ends
        assert [e.step for e in events] == list(range(start - 1, last))
        assert all(type(e) is Metrics for e in events)
    assert reader.read(2514) == (2514, [])


def test_to_seq_bounds_a_read_and_iter_events_streams_everything(tmp_path):
    _write(tmp_path, [10] * 50)
    reader = JournalReader(tmp_path)
    first, events = reader.read(95, 1000, to_seq=120)
    assert first == 95 and [e.step for e in events] == list(range(94, 120))
    assert [seq for seq, _ in reader.iter_events(chunk_events=7)] == list(range(1, 501))


def test_a_failed_write_leaves_the_file_ending_at_a_whole_line(tmp_path, monkeypatch):
    """A short write (the disk filled mid-line) is cut off, so the next batch starts on a new line
    and keeps the seqs the failed one would have had."""
    writer = _write(tmp_path, [5])
    size = os.path.getsize(writer.path)
    real_write = os.write

    def short_then_full(fd, data):
        if fd == writer._fd:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError):
        writer.append([_metric(i) for i in range(5, 10)])
    monkeypatch.undo()
    assert os.path.getsize(writer.path) == size and writer.last_seq == 5
    first, _ = writer.append([_metric(i) for i in range(5, 10)])
    assert first == 6
    assert [seq for seq, _ in read_journal(tmp_path).events] == list(range(1, 11))


def test_a_corrupt_line_is_skipped_counted_and_warned_about_once(tmp_path, caplog):
    writer = _write(tmp_path, [4, 4, 4])
    lines = writer.path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:30] + b"#" * (len(lines[2]) - 31) + b"\n"  # the second batch, damaged in place
    lines.insert(3, b"not json at all\n")
    writer.path.write_bytes(b"".join(lines))
    reader = JournalReader(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tracking"):
        seqs = [seq for seq, _ in reader.iter_events()]
    assert seqs == [1, 2, 3, 4, 9, 10, 11, 12]
    assert reader.corrupt_lines == 2
    assert sum("was skipped" in r.getMessage() for r in caplog.records) == 1


def test_a_torn_last_line_waits_for_the_writer_and_is_never_an_error(tmp_path):
    writer = _write(tmp_path, [3])
    with open(writer.path, "ab") as fh:
        fh.write(b'["batch",4,[["metrics",{"x"')
    reader = JournalReader(tmp_path)
    assert reader.refresh() == 3 and reader.corrupt_lines == 0
    assert reader.read(4) == (4, [])


def test_non_finite_values_and_paths_come_back_as_written(tmp_path):
    writer = JournalWriter(tmp_path, {}, 60)
    artifact = str(tmp_path / "artifacts" / "model.pt")
    writer.append([(METRICS, {"nan": math.nan, "inf": math.inf, "ninf": -math.inf}, 0, 1.0),
                   (ARTIFACT, "model.pt", artifact, 1.0), (TAG, "k", "v", 1.0)], has_paths=True)
    assert b'"model.pt",1.0' not in writer.path.read_bytes()  # the path is stored relative to the run
    (_, metrics), (_, art), (_, tag) = read_journal(tmp_path).events
    assert math.isnan(metrics.values["nan"]) and metrics.values["inf"] == math.inf
    assert metrics.values["ninf"] == -math.inf and art.path == artifact and tag == Tag("tag", "k", "v", 1.0)


def test_an_event_json_cannot_hold_is_left_out_and_the_rest_journaled(tmp_path, caplog):
    writer = JournalWriter(tmp_path, {}, 60)
    first, written = writer.append([_metric(0), (TAG, "k", "a\udc80", 1.0), _metric(1)])
    assert first == 1 and [e[0] for e in written] == [METRICS, METRICS]
    assert [e.step for _, e in read_journal(tmp_path).events] == [0, 1]
    assert "could not be journaled" in caplog.text


def test_an_artifact_path_outside_the_run_is_skipped_not_raised(tmp_path):
    writer = _write(tmp_path, [1])
    with open(writer.path, "ab") as fh:
        fh.write(b'["batch",2,[["artifact","x","../../etc/passwd",1.0],["metrics",{"x":1.0},1,1.0]]]\n')
    reader = JournalReader(tmp_path)
    first, events = reader.read(1)
    assert first == 1 and events[1] is None and events[2].step == 1 and reader.corrupt_events == 1


def test_the_sparse_index_keeps_memory_flat_for_a_line_per_event(tmp_path):
    """Sync mode writes a line per log call; the reader indexes one line per 64 KiB, not each."""
    _write(tmp_path, [1] * 20_000)
    reader = JournalReader(tmp_path)
    assert reader.refresh() == 20_000
    assert len(reader._index_seqs) < 40
    first, events = reader.read(15_001, 3)
    assert first == 15_001 and [e.step for e in events] == [15_000, 15_001, 15_002]


def test_tags_are_read_without_decoding_every_line(tmp_path):
    writer = _write(tmp_path, [100])
    writer.append([(TAG, "a", "1", 1.0)])
    writer.append([_metric(0), (TAG, "a", "2", 2.0), (TAG, "b", "x", 2.0)])
    assert JournalReader(tmp_path).tags() == {"a": "2", "b": "x"}
