"""`python -m benchmarks [--quick] [--only NAME ...]`: run the benchmarks, print tables, write results.

Runs on the main thread. `--quick` is the small version CI runs so the benchmarks never rot; it
enforces no target.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

BENCHMARKS = ["caller_cost", "training_loop", "tiny_loop", "sink_throughput", "slow_sink", "stalled_sink",
              "durability", "scaling", "delivery_cpu", "lightning_fit"]
RESULTS = Path(__file__).resolve().parent / "results"


def _machine() -> dict[str, object]:
    import os

    import torch

    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "processor": platform.processor() or platform.machine()}


def _previous(out: Path, quick: bool) -> dict[str, object]:
    """With --only, the other benchmarks' sections of the results file stay (each section's ratios
    were measured within its own run; its `started` says when)."""
    try:
        previous = json.loads(out.read_text())
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) and previous.get("quick") == quick else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="a small run of each benchmark (CI's smoke test)")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS,
                        help="run only these; the results file keeps the other benchmarks' last results")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: benchmarks/results/latest.json, or quick.json with --quick)")
    args = parser.parse_args(argv)
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    results = _previous(out, args.quick) if args.only else {}
    results.update(machine=_machine(), quick=args.quick)
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        started, clock = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()
        result = module.run(quick=args.quick)
        result.update(started=started, seconds=round(time.perf_counter() - clock, 1))
        results[name] = result
        print(module.render(result), flush=True)
        print()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    from .chart import write_chart

    write_chart(results, out.with_suffix(".png"))
    print(f"results written to {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
