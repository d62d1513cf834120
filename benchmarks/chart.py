"""The PNG chart of a results file: caller cost, training-loop overhead, sink throughput, durability.

Runs on the benchmark's main thread, after the benchmarks, with matplotlib's Agg backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

__all__ = ["write_chart"]

#: panels that plot a ratio per row: (the row's ratio, x-axis label, title)
_RATIO_PANELS: dict[str, tuple[Callable[[dict], float], str, str]] = {
    "training_loop": (lambda r: r["x_none"], "step time / no-logging step time (log scale)", "training-loop overhead"),
    "durability": (lambda r: r["x_ours_async"], "time per metric / ours async (log scale)",
                   "time until metrics are durable"),
    "sink_throughput": (lambda r: r.get("x_log_batch", r.get("x_tensorboardX")),
                        "throughput / reference (log_batch, tensorboardX)", "sink throughput, end to end"),
}


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [name for name in ("caller_cost", "training_loop", "sink_throughput", "durability") if name in results]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, name in zip(axes[0], panels):
        rows = results[name]["rows"]
        if name == "caller_cost":
            measured = {label: r for label, r in rows.items() if "median_us" in r}  # a peer not installed has none
            labels, values = list(measured), [r["median_us"] for r in measured.values()]
            ax.barh(labels, values)
            ax.set_xscale("log")
            ax.set_xlabel("µs per call (median, log scale)")
            ax.set_title("caller cost per log call")
        else:
            field, xlabel, title = _RATIO_PANELS[name]
            labels = list(rows)
            ax.barh(labels, [field(r) for r in rows.values()])
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_title(title)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
