"""What a log call costs the caller: `log_metric` and `log_metrics` (10 keys), async vs sync vs the
floor (a bare `deque.append` of a tuple), median and p99, measured in one run.

Runs on the benchmark's main thread. The caller's cost is what the log call itself costs: the
async writer thread drains between samples (untimed), not during them; what the writer spends per
event is measured on its own (this process's CPU time while the caller waits in `flush()`; the
delivery agent is another process, measured in `delivery_cpu`), because it shares the GIL with the
training thread and so is the loop's cost too. The training-loop benchmark shows both together. The median comes from timing whole loops of calls (no timer in the loop); the p99
from timing each call with `perf_counter_ns` (the same timer overhead is in every row, the floor's
included).

After each peer's sample the process is left to go idle (`_quiesce`, untimed): the peers' own
background writers (tensorboardX's and torch's writer threads, MLflow's async queue, which writes
into the same sqlite file as the sync MLflow peer) would otherwise take the GIL, and hold the
database, during whichever case comes next.

Peers are what users would call instead; wandb's `run.log` is one of them when wandb is installed
(`pip install 'batteryml-tracking[bench]'`), always offline: `WANDB_MODE=offline` is set before
wandb is imported, so no call of this benchmark ever reaches the network.
"""
from __future__ import annotations

import collections
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from tracking import Tracker

from .harness import interleave, median, per_call_ns, percentile

__all__ = ["run"]

KEYS10 = {f"metric_{i}": 0.1 * i for i in range(10)}
WANDB_MISSING = "not installed (pip install 'batteryml-tracking[bench]')"
WANDB_PEERS = ("wandb run.log (offline)", "wandb run.log, 10 keys (offline)")
#: after a peer's sample: idle means under _QUIET_CPU_S of process CPU in _QUIET_WINDOW_S; waits at most _QUIET_MAX_S
_QUIET_CPU_S, _QUIET_WINDOW_S, _QUIET_MAX_S = 0.005, 0.05, 60.0


class _Peer(NamedTuple):
    loop: Callable[[int], None]
    calls: int  #: calls a sample makes (slow peers: fewer)


def _quiesce() -> None:
    """Wait until this process's other threads are idle: a peer's background writer finishing what
    the last sample queued, off the clock. No peer API is used for it: MLflow's flush_async_logging
    shuts its thread pool down, so the next sample would pay for the restart."""
    deadline = time.monotonic() + _QUIET_MAX_S
    while time.monotonic() < deadline:
        cpu = time.process_time()
        time.sleep(_QUIET_WINDOW_S)
        if time.process_time() - cpu < _QUIET_CPU_S:
            return


def _floor_loops() -> tuple[Callable[[int], None], Callable[[int], None], Callable[[], None]]:
    dq: collections.deque = collections.deque()
    append, now = dq.append, time.time

    def one(n: int) -> None:
        for i in range(n):
            append(("loss", 0.5, i, now()))

    def ten(n: int) -> None:
        for i in range(n):
            append((dict(KEYS10), i, now()))

    return one, ten, dq.clear


def _tracker_loops(tracker: Tracker) -> tuple[Callable[[int], None], Callable[[int], None]]:
    log_metric, log_metrics = tracker.log_metric, tracker.log_metrics

    def one(n: int) -> None:
        for i in range(n):
            log_metric("loss", 0.5, i)

    def ten(n: int) -> None:
        for i in range(n):
            log_metrics(KEYS10, i)

    return one, ten


def _peer_loops(base: str) -> dict[str, _Peer]:
    """What users call instead."""
    import mlflow
    from tensorboardX import SummaryWriter as XWriter
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    xwriter, twriter = XWriter(f"{base}/tbx"), TorchWriter(f"{base}/torch-tb")
    mlflow.set_tracking_uri(f"sqlite:///{base}/peers.db")
    mlflow.set_experiment("caller_cost_peers")
    mlflow.start_run()

    def tbx(n: int) -> None:
        for i in range(n):
            xwriter.add_scalar("loss", 0.5, i)

    def torch_tb(n: int) -> None:
        for i in range(n):
            twriter.add_scalar("loss", 0.5, i)

    def mlflow_async(n: int) -> None:
        for i in range(n):
            mlflow.log_metric("loss", 0.5, step=i, synchronous=False)

    def mlflow_sync(n: int) -> None:
        for i in range(n):
            mlflow.log_metric("loss", 0.5, step=i)

    return {"tensorboardX.add_scalar": _Peer(tbx, 2000), "torch.SummaryWriter.add_scalar": _Peer(torch_tb, 2000),
            "mlflow.log_metric(synchronous=False)": _Peer(mlflow_async, 200), "mlflow.log_metric": _Peer(mlflow_sync, 20)}


def _wandb_run(base: str) -> Any | None:
    """An offline wandb run writing under `base`, or None when wandb is not installed."""
    if importlib.util.find_spec("wandb") is None:
        return None
    # Set before wandb is imported, and over whatever the user's shell says: offline, always.
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=base)
    try:
        import wandb
    except ImportError:
        return None
    return wandb.init(project="caller_cost_peers", dir=base, mode="offline",
                      settings=wandb.Settings(silent=True))


def _wandb_loops(run: Any) -> dict[str, _Peer]:
    log = run.log

    def one(n: int) -> None:
        for i in range(n):
            log({"loss": 0.5})

    def ten(n: int) -> None:
        for i in range(n):
            log(KEYS10)

    return {WANDB_PEERS[0]: _Peer(one, 1000), WANDB_PEERS[1]: _Peer(ten, 1000)}


def _close_peers(wandb_run: Any | None) -> None:
    import mlflow

    mlflow.end_run()
    if wandb_run is not None:
        wandb_run.finish()


def _p99_ns(call: Callable[[int], None], n: int) -> float:
    pc = time.perf_counter_ns
    samples = []
    for i in range(n):
        t = pc()
        call(i)
        samples.append(pc() - t)
    return percentile(samples, 0.99)


def run(quick: bool = False, sinks: tuple[str, ...] = ("json", "tensorboard")) -> dict[str, Any]:
    calls = 2_000 if quick else 20_000
    repeats = 5 if quick else 15
    base = tempfile.mkdtemp(prefix="bench-caller-")
    # The writer wakes at its interval or when batch_max_events are queued: both beyond a sample.
    trackers = {mode: Tracker(list(sinks), mode=mode, base_dir=base, batch_interval_s=60.0,
                              batch_max_events=calls * 2, memory_budget_bytes=2**30)
                for mode in ("async", "sync")}
    for tracker in trackers.values():
        tracker.start_run(f"caller_cost_{tracker.mode}")
    floor_one, floor_ten, floor_clear = _floor_loops()
    loops = {"floor": (floor_one, floor_ten)}
    loops.update({mode: _tracker_loops(t) for mode, t in trackers.items()})

    writer_cpu: dict[str, list[float]] = {"log_metric": [], "log_metrics10": []}

    def case(loop: Callable[[int], None], n: int, drain: Tracker | None = None, kind: str = "",
             settle: Callable[[], None] | None = None) -> Callable[[], float]:
        def measure() -> float:
            floor_clear()
            cost = per_call_ns(loop, n)
            if drain is not None:
                cpu = time.process_time()
                drain.flush(timeout_s=120)  # the caller waits: the CPU this process spends now is the writer's
                writer_cpu[kind].append((time.process_time() - cpu) / n * 1e6)
            if settle is not None:
                settle()
            return cost
        return measure

    cases = {}
    for name, (one, ten) in loops.items():
        # sync mode pays for every sink inside the call: fewer calls keep the run short
        n = calls if name != "sync" else max(calls // 10, 200)
        drain = trackers["async"] if name == "async" else None
        cases[f"{name}.log_metric"] = case(one, n, drain, "log_metric")
        cases[f"{name}.log_metrics10"] = case(ten, n, drain, "log_metrics10")
    peers = _peer_loops(base)
    wandb_run = _wandb_run(base)
    if wandb_run is not None:
        peers.update(_wandb_loops(wandb_run))
    for name, peer in peers.items():
        cases[f"peer {name}"] = case(peer.loop, max(peer.calls // (10 if quick else 1), 5), settle=_quiesce)
    samples = interleave(cases, repeats)
    _close_peers(wandb_run)
    result: dict[str, Any] = {"sinks": list(sinks), "calls_per_sample": calls, "repeats": repeats, "rows": {}}
    for name, values in samples.items():
        result["rows"][name] = {"median_us": median(values) / 1000}
    for name, (one, ten) in loops.items():
        n = calls if name != "sync" else max(calls // 10, 200)
        result["rows"][f"{name}.log_metric"]["p99_us"] = _p99_ns(lambda i, one=one: one(1), n) / 1000
        result["rows"][f"{name}.log_metrics10"]["p99_us"] = _p99_ns(lambda i, ten=ten: ten(1), n) / 1000
        floor_clear()
    result["writer_cpu_us_per_event"] = {kind: median(v) for kind, v in writer_cpu.items()}
    result["writer_cpu_us_per_scalar"] = {
        "log_metric": median(writer_cpu["log_metric"]), "log_metrics10": median(writer_cpu["log_metrics10"]) / 10}
    floor = result["rows"]["floor.log_metric"]["median_us"]
    for name, row in result["rows"].items():
        row["x_floor"] = row["median_us"] / floor
        row.setdefault("p99_us", float("nan"))
    if wandb_run is None:
        result["rows"].update({f"peer {name}": {"note": WANDB_MISSING} for name in WANDB_PEERS})
    cheapest_peer = min(row["median_us"] for name, row in result["rows"].items()
                        if name.startswith("peer ") and "median_us" in row)
    result["cheapest_peer_x_async"] = cheapest_peer / result["rows"]["async.log_metric"]["median_us"]
    for tracker in trackers.values():
        tracker.close(timeout_s=120)
    rows = result["rows"]
    result["targets"] = {
        "async log_metric median <= 4x floor": rows["async.log_metric"]["x_floor"] <= 4,
        "async log_metric p99 <= 20 us": rows["async.log_metric"]["p99_us"] <= 20,
        "async log_metrics(10 keys) median <= 3 us": rows["async.log_metrics10"]["median_us"] <= 3,
        "async log_metric >= 30x cheaper than the cheapest peer": result["cheapest_peer_x_async"] >= 30,
        "writer CPU <= 2 us per scalar (json + tensorboard, 10-key events)":
            result["writer_cpu_us_per_scalar"]["log_metrics10"] <= 2,
    }
    return result


def render(result: dict[str, Any]) -> str:
    lines = [f"caller cost per call (sinks: {', '.join(result['sinks'])}; medians of {result['repeats']} interleaved samples)",
             f"  {'case':<40}{'median µs':>11}{'p99 µs':>10}{'× floor':>11}"]
    for name, row in result["rows"].items():
        if "median_us" not in row:
            lines.append(f"  {name:<40}{row['note']}")
            continue
        lines.append(f"  {name:<40}{row['median_us']:>11.3f}{row['p99_us']:>10.2f}{row['x_floor']:>11.2f}")
    cpu = result["writer_cpu_us_per_scalar"]
    lines.append(f"  writer thread CPU per scalar (GIL time the loop also pays): {cpu['log_metric']:.2f} µs in 1-key events, "
                 f"{cpu['log_metrics10']:.2f} µs in 10-key events")
    for target, ok in result["targets"].items():
        lines.append(f"  target {target}: {'met' if ok else 'MISSED'}")
    return "\n".join(lines)
