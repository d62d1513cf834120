"""`python -m tracking`: replay a run's journal into a sink, list runs, show one run.

Runs on the main thread of its own process; it reads run directories and never needs the run's
process to be alive.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path
from typing import Any, Sequence

import orjson

from .errors import TrackingError
from .journal import read_journal
from .rundir import META_FILE, read_meta, write_meta
from .sinks import RunContext, available_sinks, resolve_sink

__all__ = ["main", "replay"]

_REPLAY_CHUNK = 5000


def replay(run_dir: str | Path, sink_name: str, tracking_uri: str | None = None) -> int:
    """Deliver the events `sink_name` has not received yet; returns how many were sent.

    The sink's `delivered_seq` in meta.json says how far it got; it is advanced after each chunk,
    so replaying twice sends nothing twice.
    """
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    journal = read_journal(run_dir)
    state = meta.setdefault("sinks", {}).setdefault(sink_name, {})
    done = int(state.get("delivered_seq", 0))
    pending = [event for seq, event in journal.events if seq > done]
    if sink_name == "mlflow" and tracking_uri is None and "***" not in str(meta.get("tracking_uri", "***")):
        tracking_uri = meta["tracking_uri"]  # the store the run used (a redacted one must be given again)
    sink = _build_sink(sink_name, tracking_uri)
    header = journal.header
    run = RunContext(
        run_id=meta["run_id"], run_name=meta.get("run_name", "run"), run_dir=run_dir,
        experiment=meta.get("experiment", "Default"), config=header.get("config", {}),
        start_time=meta.get("start_time", 0.0), mode="replay", resume=meta,
    )
    facts = sink.open(run) or {}
    for start in range(0, len(pending), _REPLAY_CHUNK):
        chunk = pending[start:start + _REPLAY_CHUNK]
        sink.write(chunk)
        done += len(chunk)
        state.update(delivered_seq=done, undelivered=len(journal.events) - done)
        write_meta(run_dir, meta)
    sink.close(journal.end_status or meta.get("status") or "FINISHED")
    meta.update(facts)
    state.update(delivered_seq=done, undelivered=len(journal.events) - done, replayed=True)
    write_meta(run_dir, meta)
    return len(pending)


def _build_sink(name: str, tracking_uri: str | None) -> Any:
    if name == "mlflow" and tracking_uri:
        from .sinks.mlflow_sink import MLflowSink

        return MLflowSink(tracking_uri=tracking_uri)
    return resolve_sink(name)


def _runs(base_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for meta_path in sorted(base_dir.glob(f"*/{META_FILE}")):
        try:
            meta = read_meta(meta_path.parent)
        except (OSError, ValueError):
            continue
        metrics_path = meta_path.parent / "metrics.json"
        meta["metrics"] = orjson.loads(metrics_path.read_bytes()) if metrics_path.exists() else {}
        rows.append(meta)
    return rows


def _fmt_time(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _print_runs(rows: list[dict[str, Any]], metric_keys: Sequence[str]) -> None:
    header = ["run_id", "name", "status", "start", "duration_s", *metric_keys]
    table = [header]
    for r in rows:
        duration = f"{r['end_time'] - r['start_time']:.1f}" if r.get("end_time") else "-"
        values = [f"{r['metrics'][k]:.6g}" if k in r["metrics"] else "-" for k in metric_keys]
        table.append([r["run_id"], r.get("run_name", ""), r.get("status", ""), _fmt_time(r.get("start_time")),
                      duration, *values])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def _show(run: str, base_dir: Path, as_json: bool) -> int:
    run_dir = Path(run) if Path(run).is_dir() else base_dir / run
    if not (run_dir / META_FILE).exists():
        print(f"error: no run at {run_dir} (give a run directory, or a run id with --base-dir)", file=sys.stderr)
        return 2
    meta = read_meta(run_dir)
    info = {
        "run_id": meta["run_id"], "status": meta.get("status"), "experiment": meta.get("experiment"),
        "config": read_journal(run_dir).header.get("config", {}), "tags": meta.get("tags", {}),
        "metrics": orjson.loads((run_dir / "metrics.json").read_bytes()) if (run_dir / "metrics.json").exists() else {},
        "sinks": meta.get("sinks", {}),
    }
    if as_json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    for key in ("run_id", "status", "experiment"):
        print(f"{key}: {info[key]}")
    for section in ("config", "tags", "metrics"):
        print(f"{section}:")
        for k, v in info[section].items():
            print(f"  {k}: {v}")
    print("sinks:")
    for name, s in info["sinks"].items():
        print(f"  {name}: delivered {s.get('delivered_seq', 0)}, undelivered {s.get('undelivered', 0)}, "
              f"errors {s.get('errors', 0)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_replay = sub.add_parser("replay", help="deliver a run's journal to sinks that missed events")
    p_replay.add_argument("run_dir")
    p_replay.add_argument("--to", action="append", required=True, metavar="SINK",
                          help=f"sink to deliver to (repeatable): {', '.join(available_sinks())}")
    p_replay.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the run used)")
    p_runs = sub.add_parser("runs", help="list runs as a table")
    p_runs.add_argument("base_dir", nargs="?", default="artifacts/runs")
    p_runs.add_argument("--metrics", default="", help="comma-separated metrics to show")
    p_runs.add_argument("--json", action="store_true")
    p_show = sub.add_parser("show", help="config, tags, final metrics and delivery status of one run")
    p_show.add_argument("run", help="a run directory, or a run id under --base-dir")
    p_show.add_argument("--base-dir", default="artifacts/runs")
    p_show.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "replay":
        for name in args.to:
            try:
                sent = replay(args.run_dir, name, args.tracking_uri)
            except (TrackingError, OSError) as exc:
                print(f"error: cannot replay {args.run_dir} to {name}: {exc}", file=sys.stderr)
                return 2
            print(f"replayed {sent} events to {name}")
        return 0
    if args.command == "runs":
        rows = _runs(Path(args.base_dir))
        if args.json:
            sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            _print_runs(rows, [k for k in args.metrics.split(",") if k])
        return 0
    return _show(args.run, Path(args.base_dir), args.json)
