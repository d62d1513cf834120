"""`python -m tracking`: replay a run's journal into a sink, list runs, show one run.

Runs on the main thread of its own process; it reads run directories and never needs the run's
process to be alive.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import orjson

from .delivery.cursors import DeliveryStore, nobody_delivers
from .delivery.engine import replay_command
from .delivery.replay import DEFAULT_REPLAY_TIMEOUT_S, replay
from .core.errors import ReplayError
from .journal import JournalReader
from .journal.rundir import META_FILE, read_meta
from .sinks import available_sinks

__all__ = ["main", "replay"]


def _delivery(run_dir: Path, meta: dict[str, Any]) -> tuple[int, dict[str, dict[str, Any]]]:
    """(the last seq journaled, where each sink stands): the live state files over meta.json's copy."""
    ended = meta.get("status") in ("FINISHED", "FAILED", "KILLED") and "pending_status" not in meta
    journaled = int(meta.get("events") or 0) if ended else JournalReader(run_dir).refresh()
    sinks = {name: dict(report) for name, report in (meta.get("sinks") or {}).items()}
    for name, state in DeliveryStore(run_dir).load_all().items():
        merged = sinks.setdefault(name, {})
        merged.update({k: v for k, v in state.items() if k not in ("checkpoint", "facts")})
    for report in sinks.values():  # what is not durable in the sink yet (what a replay would send)
        report["undelivered"] = max(journaled - int(report.get("committed_seq", report.get("delivered_seq", 0))), 0)
    return journaled, sinks


def _status(meta: dict[str, Any], sinks: dict[str, dict[str, Any]], orphaned: bool) -> str:
    status = str(meta.get("status", ""))
    behind = ", ".join(f"{n} {r['undelivered']:,} behind" for n, r in sinks.items() if r["undelivered"])
    if orphaned:
        ended = f"ended {meta['pending_status']}; " if "pending_status" in meta else ""
        return f"{status} ({ended}its process is gone and nothing delivers it: {behind or 'nothing'} undelivered)"
    if "pending_status" in meta:
        return f"{status} (ended {meta['pending_status']}; delivering{': ' + behind if behind else ''})"
    return status


def _replay_commands(run_dir: Path, sinks: dict[str, dict[str, Any]], orphaned: bool) -> list[str]:
    """What delivers the rest of a run nothing delivers any more, and closes its sinks (none for a
    run being delivered): every sink behind, or not closed."""
    if not orphaned:
        return []
    return [replay_command(run_dir, name) for name, r in sinks.items()
            if r["undelivered"] or r.get("state") != "closed"]


def _runs(base_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for meta_path in sorted(base_dir.glob(f"*/{META_FILE}")):
        try:
            meta = read_meta(meta_path.parent)
        except (OSError, ValueError):
            continue
        meta["metrics"] = _metrics(meta_path.parent)
        meta["journaled"], meta["sinks"] = _delivery(meta_path.parent, meta)
        meta["delivering"] = not nobody_delivers(meta_path.parent, meta)
        meta["replay_commands"] = _replay_commands(meta_path.parent, meta["sinks"], not meta["delivering"])
        rows.append(meta)
    return rows


def _metrics(run_dir: Path) -> dict[str, Any]:
    """The run's latest metrics (metrics.json), or {} if there are none (yet) or it can't be read."""
    try:
        return orjson.loads((run_dir / "metrics.json").read_bytes())
    except (OSError, ValueError):
        return {}


def _fmt_time(ts: float | None) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _print_runs(rows: list[dict[str, Any]], metric_keys: Sequence[str]) -> None:
    header = ["run_id", "name", "status", "start", "duration_s", *metric_keys]
    table = [header]
    for r in rows:
        duration = f"{r['end_time'] - r['start_time']:.1f}" if r.get("end_time") else "-"
        values = [_fmt_metric(r["metrics"].get(k)) for k in metric_keys]
        table.append([r["run_id"], r.get("run_name", ""), _status(r, r["sinks"], not r["delivering"]),
                      _fmt_time(r.get("start_time")), duration, *values])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    commands = [command for r in rows for command in r["replay_commands"]]
    if commands:
        print("\nruns that nothing delivers any more; deliver them with:")
        for command in commands:
            print(f"  {command}")


def _fmt_metric(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, (int, float)) else "-"


def _show(run: str, base_dir: Path, as_json: bool) -> int:
    run_dir = Path(run) if Path(run).is_dir() else base_dir / run
    if not (run_dir / META_FILE).exists():
        print(f"error: no run at {run_dir} (give a run directory, or a run id with --base-dir)", file=sys.stderr)
        return 2
    try:
        meta = read_meta(run_dir)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {run_dir / META_FILE}: {exc}", file=sys.stderr)
        return 2
    journaled, sinks = _delivery(run_dir, meta)
    orphaned = nobody_delivers(run_dir, meta)
    info = {
        "run_id": meta.get("run_id"), "status": meta.get("status"), "pending_status": meta.get("pending_status"),
        "experiment": meta.get("experiment"), "config": JournalReader(run_dir).header_only().get("config", {}),
        "tags": meta.get("tags", {}),
        "metrics": _metrics(run_dir),
        "journaled": journaled, "sinks": sinks,
        "delivering": not orphaned, "replay_commands": _replay_commands(run_dir, sinks, orphaned),
    }
    if as_json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
        return 0
    print(f"run_id: {info['run_id']}")
    print(f"status: {_status(meta, sinks, orphaned)}")
    print(f"experiment: {info['experiment']}")
    for section in ("config", "tags", "metrics"):
        print(f"{section}:")
        for k, v in info[section].items():
            print(f"  {k}: {v}")
    print(f"sinks ({journaled} events journaled):")
    for name, s in sinks.items():
        print(f"  {name}: delivered {s.get('delivered_seq', 0)}, undelivered {s.get('undelivered', 0)}, "
              f"errors {s.get('errors', 0)}, {s.get('state', '?')}")
    for command in info["replay_commands"]:
        print(f"deliver the rest with: {command}")
    return 0


def _replay(run_dir: str, sinks: Sequence[str], tracking_uri: str | None, timeout_s: float) -> int:
    _log_to_stderr()
    # The engine's own account of failing calls is summed up by the one line below (or ReplayError's).
    logging.getLogger("tracking.delivery.engine").setLevel(logging.CRITICAL)
    for name in sinks:
        try:
            result = replay(run_dir, name, tracking_uri, timeout_s=timeout_s)
        except ReplayError as exc:
            print(f"error: cannot replay {run_dir} to {name}: {_one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:  # a CLI answers in one line, never a traceback
            print(f"error: cannot replay {run_dir} to {name}: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
            return 2
        notes = [f"{result.rejected} refused by the sink"] if result.rejected else []
        if result.lost:
            notes.append(f"{result.lost} unreadable in the journal, skipped")
        print(f"replayed {result.sent} events to {name}" + (f" ({'; '.join(notes)})" if notes else ""))
    return 0


def _log_to_stderr() -> None:
    """Warnings (a damaged journal line, a key MLflow can't take) as one line each on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter("warning: %(message)s"))
    for name in ("tracking", "py.warnings"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    logging.captureWarnings(True)


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.name == "py.warnings" and record.args:
            first_line = str(record.args[0]).split("\n", 1)[0]  # "file:line: Category: message"
            record.msg, record.args = first_line.split(": ", 2)[-1], ()
        return _one_line(super().format(record), limit=600)


def _one_line(exc: BaseException | str, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_replay = sub.add_parser("replay", help="deliver a run's journal to sinks that missed events")
    p_replay.add_argument("run_dir")
    p_replay.add_argument("--to", action="append", required=True, metavar="SINK",
                          help=f"sink to deliver to (repeatable): {', '.join(available_sinks())}")
    p_replay.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the run used)")
    p_replay.add_argument("--timeout-s", type=float, default=DEFAULT_REPLAY_TIMEOUT_S,
                          help=f"how long to retry a failing sink before giving up (default {DEFAULT_REPLAY_TIMEOUT_S:g})")
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
        return _replay(args.run_dir, args.to, args.tracking_uri, args.timeout_s)
    if args.command == "runs":
        rows = _runs(Path(args.base_dir))
        if args.json:
            sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
        else:
            _print_runs(rows, [k for k in args.metrics.split(",") if k])
        return 0
    return _show(args.run, Path(args.base_dir), args.json)
