"""The PNG chart of a results file: caller cost, training-loop overhead, sink throughput.

Runs on the benchmark's main thread, after the benchmarks, with matplotlib's Agg backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_chart"]


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [name for name in ("caller_cost", "training_loop", "sink_throughput") if name in results]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, name in zip(axes[0], panels):
        rows = results[name]["rows"]
        if name == "caller_cost":
            labels, values = list(rows), [r["median_us"] for r in rows.values()]
            ax.barh(labels, values)
            ax.set_xscale("log")
            ax.set_xlabel("µs per call (median, log scale)")
            ax.set_title("caller cost per log call")
        elif name == "training_loop":
            labels, values = list(rows), [r["x_none"] for r in rows.values()]
            ax.barh(labels, values)
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("step time / no-logging step time (log scale)")
            ax.set_title("training-loop overhead")
        else:
            labels = list(rows)
            values = [r.get("x_log_batch", r.get("x_tensorboardX")) for r in rows.values()]
            ax.barh(labels, values)
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("throughput / reference (log_batch, tensorboardX)")
            ax.set_title("sink throughput, end to end")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
