"""What logging costs a *tiny* training step (0.12-0.14 ms on the 2-core machines of Dec 2026), against a floor measured in the same run.

The loop runs on this process's main thread (torch on 1 thread). Each step logs 10 scalars in two
calls, as a training script does: the loss as a 0-d tensor, and 9 plain floats in one dict.

Cases, and the threads and processes each adds beside the main thread (all four cases are set up
before timing and live for the whole benchmark; a case's helpers are idle when it is not its turn):

- ``floor json+tb``: what a minimal hand-written logger does: per step two ``deque.append`` calls
  (``(step, "train/loss", loss.item())`` and ``(step, dict_of_9_floats)``); one drain thread wakes
  every 50 ms, takes what is there, and writes it with one ``orjson.dumps(list) + b"\\n"`` and one
  ``os.write`` to a file. Threads: main + 1 drain thread.
- ``floor json+tb+mlflow``: the same, and its drain thread also pickles each drained batch and sends
  it over a socket pair to an ingest process (``subprocess``, a fresh interpreter, nice 10 like our
  MLflow helper) that stores it into its own sqlite run with ``MlflowClient.log_batch``, 1,000
  metrics a call. Threads: main + 1 drain thread; processes: + the ingest process (a reader thread
  and the ingest loop).
- ``ours async json+tb``: ``Tracker(["json", "tensorboard"], mode="async")``. Threads: main + the
  tracker's writer thread and its agent link's reader (listed in the result's ``threads``);
  processes: the delivery agent (``stats().agent_pid``), which runs the sinks.
- ``ours async json+tb+mlflow``: with ``MLflowSink(tracking_uri=sqlite)`` added; processes: + the
  MLflow sink's helper process, which the agent starts.

How a case is measured (the method of `training_loop`):

- Pairs. Each case's chunk runs right after its own no-logging chunk (the same steps, the same 9
  floats computed and dropped); the figure is the median over rounds of the ratio within each pair,
  and of the per-step difference in µs. The cases' order is shuffled (seeded) each round: with a
  rotation each case always followed the same one, and what that one left running after its chunk
  (ours + MLflow's agent and helper) slowed the next case's no-logging chunk (the floor's, by
  1-2 %), which made that floor look cheaper than no logging at all. The garbage
  collector stays enabled (as in `training_loop`); ``gc.collect()`` runs before each round.
  "× floor" is ours' median ratio over its floor's; "× floor by round" is the median over rounds of
  ours' ratio over its floor's in the same round (both ran within seconds, at one machine speed).
- The local part is paid inside the chunk: after its logging steps a chunk keeps running plain steps
  until the local delivery caught up (floors: the drain thread wrote every appended item; ours: all
  events enqueued, ``queue_depth == 0`` and ``undelivered`` 0 for json and tensorboard), and those
  steps count. The MLflow part is not waited for inside the chunk: between pairs an untimed wait
  until it drained (floor: the ingest process acked every item; ours: ``flush``), reported as
  ``drain s``.
- CPU. Per chunk, ``time.process_time()`` (this process, all its threads), minus the paired
  no-logging chunk's CPU per step times the chunk's steps, over the scalars logged. Other processes
  (every descendant of this process found in /proc, plus a reported ``agent_pid``): utime + stime
  across the chunk *and* its untimed drain, over the scalars logged.

Machine note: the tracker's background work only runs beside the loop when a second core is free;
on a 2-core machine shared with other work, a busy second core slows the loop.
"""
from __future__ import annotations

import gc
import os
import pickle
import random
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .harness import cmdline, cpu_delta, descendants_cpu, median

__all__ = ["make_step", "render", "run"]

#: the model: Linear(IN, HIDDEN) -> ReLU -> Linear(HIDDEN, 1), no biases, on a batch of BATCH, plain
#: SGD: the smallest 2-layer step; on the 2-core dev machine it took 0.36-0.40 ms (a single
#: Linear(8, 1): 0.32-0.39 ms; with biases or 16 hidden units: 0.43-0.54 ms)
IN, HIDDEN, BATCH = 8, 8, 16
KEYS9 = ["train/loss_ema", "train/loss_sq", "train/lr", "train/epoch", "train/samples",
         "train/tokens", "train/grad_scale", "train/momentum", "train/weight_decay"]
LOCAL_SINKS = ("json", "tensorboard")
#: plain steps a chunk may run after its logging steps while the local part catches up (a cap)
MAX_TRAILING_STEPS = 5000
DRAIN_INTERVAL_S = 0.05
#: trailing steps run between two "caught up yet?" checks (every case alike)
CHECK_EVERY_STEPS = 16
#: the floor's ingest process runs at the niceness our MLflow helper uses
INGEST_NICENESS = 10
_ACK = struct.Struct("<Q")
_FLOORS = {"ours async json+tb": "floor json+tb", "ours async json+tb+mlflow": "floor json+tb+mlflow"}
CASES = ["floor json+tb", "floor json+tb+mlflow", "ours async json+tb", "ours async json+tb+mlflow"]


def make_step(seed: int = 0) -> Callable[[int], tuple[Any, dict[str, float]]]:
    """One training step; returns (the loss tensor, 9 floats derived from `loss.item()` and `i`)."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN, bias=False), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, 1, bias=False))
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-2, foreach=False)
    x, y = torch.randn(BATCH, IN), torch.randn(BATCH, 1)
    mse = torch.nn.functional.mse_loss
    ema = [0.0]

    def step(i: int) -> tuple[Any, dict[str, float]]:
        loss = mse(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        v = loss.item()
        e = ema[0] = 0.9 * ema[0] + 0.1 * v
        return loss, {"train/loss_ema": e, "train/loss_sq": v * v, "train/lr": 1e-2, "train/epoch": i / 1000,
                      "train/samples": float(i * BATCH), "train/tokens": float(i * BATCH * IN),
                      "train/grad_scale": 1.0, "train/momentum": 0.0, "train/weight_decay": 0.0}

    return step


# -- the floor -------------------------------------------------------------------------------------------

def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _ingest_main(fd: int, uri: str) -> None:
    """The floor's ingest process: store every batch the drain thread sends into one MLflow run,
    1,000 metrics a `log_batch`; after each round of batches, ack the items stored so far."""
    import queue

    try:
        os.nice(INGEST_NICENESS)
    except OSError:
        pass
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    sock = socket.socket(fileno=fd)
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment(f"tiny-loop-floor-{time.monotonic_ns()}")).info.run_id
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def reader() -> None:  # keeps the socket empty so that the drain thread never blocks on it
        try:
            while True:
                (size,) = _ACK.unpack(_recv_exact(sock, _ACK.size))
                inbox.put(pickle.loads(_recv_exact(sock, size)))
        except (EOFError, OSError):
            inbox.put(None)

    threading.Thread(target=reader, daemon=True).start()
    try:
        sock.sendall(_ACK.pack(0))  # ready
        _ingest_loop(sock, client, run_id, inbox, Metric)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the benchmark went away (it failed, or was interrupted): nothing left to ack


def _ingest_loop(sock: socket.socket, client: Any, run_id: str, inbox: Any, Metric: Any) -> None:
    done = 0
    while True:
        batches = [inbox.get()]
        while not inbox.empty():
            batches.append(inbox.get())
        stop = batches[-1] is None
        ts = int(time.time() * 1000)
        metrics: list[Any] = []
        for items in batches:
            if items is None:
                continue
            for item in items:
                if len(item) == 3:
                    metrics.append(Metric(item[1], item[2], ts, item[0]))
                else:
                    s = item[0]
                    metrics.extend(Metric(k, v, ts, s) for k, v in item[1].items())
            done += len(items)
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        if stop:
            client.set_terminated(run_id)
            return
        sock.sendall(_ACK.pack(done))


class _Floor:
    """The hand-written floor: a deque, a drain thread every 50 ms, optionally an ingest process."""

    def __init__(self, name: str, base: Path, mlflow: bool) -> None:
        import orjson

        self.name = name
        self.queue: deque = deque()
        self.appended = 0  # items the loop appended (updated after each loop, not per step)
        self.written = 0  # items the drain thread wrote
        self._fd = os.open(base / f"{name.replace(' ', '_').replace('+', '_')}.jsonl",
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._dumps = orjson.dumps
        self._stop = False
        self.proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self.acked = 0
        if mlflow:
            parent, child = socket.socketpair()
            code = "import sys; from benchmarks.tiny_loop import _ingest_main; _ingest_main(int(sys.argv[1]), sys.argv[2])"
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", code, str(child.fileno()), f"sqlite:///{base}/floor.db"],
                    pass_fds=(child.fileno(),), cwd=str(Path(__file__).resolve().parent.parent),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            finally:
                child.close()
            self._sock = parent
        self._thread = threading.Thread(target=self._drain, name=f"{name} drain", daemon=True)
        self._thread.start()

    def ready(self) -> None:
        """Wait until the ingest process has its MLflow run (it starts while the trackers do)."""
        if self._sock is not None:
            self._read_acks(0, timeout_s=300)

    def _drain(self) -> None:
        q, fd, dumps, sock = self.queue, self._fd, self._dumps, self._sock
        popleft = q.popleft
        while not self._stop:
            time.sleep(DRAIN_INTERVAL_S)
            n = len(q)
            if not n:
                continue
            items = [popleft() for _ in range(n)]
            data = dumps(items) + b"\n"
            while data:
                data = data[os.write(fd, data):]
            self.written += n
            if sock is not None:
                payload = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
                sock.sendall(_ACK.pack(len(payload)) + payload)

    def loop(self, step: Callable, first: int, n: int) -> None:
        append = self.queue.append
        for i in range(first, first + n):
            loss, metrics = step(i)
            append((i, "train/loss", loss.item()))
            append((i, metrics))
        self.appended += 2 * n

    def caught_up(self) -> bool:
        return self.written >= self.appended

    def _read_acks(self, target: int, timeout_s: float) -> None:
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + timeout_s
        while self.acked < target or target == 0:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise RuntimeError(f"tiny_loop: {self.name}: the ingest process did not ack within {timeout_s} s")
            (self.acked,) = _ACK.unpack(_recv_exact(sock, _ACK.size))
            if target == 0:
                return

    def drain(self) -> None:
        """Untimed: wait until the ingest process stored everything appended so far."""
        if self._sock is not None:
            self._read_acks(self.appended, timeout_s=600)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        os.close(self._fd)
        if self._sock is not None:
            self._sock.close()  # EOF: the ingest process terminates its run and exits
        if self.proc is not None:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pids(self) -> tuple[int, ...]:
        return (self.proc.pid,) if self.proc is not None else ()


# -- ours ------------------------------------------------------------------------------------------------

def mlflow_sink(uri: str) -> Any:
    from tracking.sinks.mlflow import MLflowSink

    return MLflowSink(tracking_uri=uri)


class _Ours:
    """Our tracker, async; caught up once json and tensorboard hold every event logged."""

    def __init__(self, name: str, base: Path, mlflow: bool) -> None:
        from tracking import Tracker

        self.name = name
        sinks: list[Any] = list(LOCAL_SINKS)
        if mlflow:
            sinks.append(mlflow_sink(f"sqlite:///{base}/ours.db"))
        self.tracker = Tracker(sinks, mode="async", base_dir=base / "runs", end_timeout_s=600)
        self.tracker.start_run(name.replace(" ", "_").replace("+", "_"))
        self.tracker.flush(timeout_s=300)  # sinks open (the MLflow helper started) before timing
        stats = self.tracker.stats()
        self.fields = list(getattr(stats, "_fields", ()) or vars(stats))
        self.sink_names = sorted(getattr(stats, "undelivered", {}) or {})
        self.local = [n for n in self.sink_names if n in LOCAL_SINKS] or [n for n in self.sink_names if "mlflow" not in n]
        # events the run holds besides the ones we log (start-of-run events, if any)
        self._expected = getattr(stats, "enqueued", 0) or 0
        self.agent_pid = getattr(stats, "agent_pid", None)

    def loop(self, step: Callable, first: int, n: int) -> None:
        log_metric, log_metrics = self.tracker.log_metric, self.tracker.log_metrics
        for i in range(first, first + n):
            loss, metrics = step(i)
            log_metric("train/loss", loss, i)
            log_metrics(metrics, i)
        self._expected += 2 * n

    def caught_up(self) -> bool:
        stats = self.tracker.stats()
        if getattr(stats, "queue_depth", 0) or getattr(stats, "enqueued", self._expected) < self._expected:
            return False  # events still queued, or taken by the writer but not yet journaled
        undelivered = getattr(stats, "undelivered", None) or {}
        return not any(undelivered.get(name, 0) for name in self.local)

    def drain(self) -> None:
        if not self.tracker.flush(timeout_s=600):
            raise RuntimeError(f"tiny_loop: {self.name}: flush did not finish within 600 s")

    def close(self) -> None:
        self.tracker.close(timeout_s=600)

    def pids(self) -> tuple[int, ...]:
        pid = getattr(self.tracker.stats(), "agent_pid", None)
        return (pid,) if isinstance(pid, int) else ()


# -- timing ----------------------------------------------------------------------------------------------

def _plain_chunk(step: Callable, n: int) -> tuple[float, float]:
    """(wall s, CPU s) of `n` no-logging steps (the same floats computed and dropped)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        step(i)
    return time.perf_counter() - wall, time.process_time() - cpu


def _logging_chunk(step: Callable, case: Any, first: int, n: int) -> tuple[float, float, int]:
    """(wall s, CPU s, steps run) of `n` logging steps and the plain steps until the local part caught up."""
    caught_up = case.caught_up
    wall, cpu = time.perf_counter(), time.process_time()
    case.loop(step, first, n)
    ran, cap = n, n + MAX_TRAILING_STEPS
    while ran < cap and not caught_up():
        for _ in range(min(CHECK_EVERY_STEPS, cap - ran)):  # the check costs ours ~6 µs (stats()), a floor nothing
            step(ran)
            ran += 1
    return time.perf_counter() - wall, time.process_time() - cpu, ran


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    chunk = 200 if quick else 1000
    rounds = 3 if quick else 40
    base = Path(tempfile.mkdtemp(prefix="bench-tiny-loop-"))
    setup_clock = time.perf_counter()
    cases: dict[str, Any] = {}
    try:
        cases["floor json+tb"] = _Floor("floor json+tb", base, mlflow=False)
        cases["floor json+tb+mlflow"] = _Floor("floor json+tb+mlflow", base, mlflow=True)
        cases["ours async json+tb"] = _Ours("ours async json+tb", base, mlflow=False)
        cases["ours async json+tb+mlflow"] = _Ours("ours async json+tb+mlflow", base, mlflow=True)
        cases["floor json+tb+mlflow"].ready()
        return _measure(cases, chunk, rounds, base, time.perf_counter() - setup_clock)
    finally:
        for case in cases.values():
            try:
                case.close()
            except Exception as exc:  # noqa: BLE001 - the others still close
                print(f"tiny_loop: closing {case.name}: {exc!r}", file=sys.stderr)


def _measure(cases: dict[str, Any], chunk: int, rounds: int, base: Path, setup_s: float) -> dict[str, Any]:
    step = make_step()
    for i in range(500):
        step(i)  # warm-up
    next_step = dict.fromkeys(cases, 0)
    for name, case in cases.items():  # each case's code paths warm, its sinks' first writes done
        _logging_chunk(step, case, 0, 100)
        case.drain()
        next_step[name] = 100
    extra = tuple(p for case in cases.values() for p in case.pids())
    names = list(cases)
    keys = ("ratio", "added_us", "step_ms", "none_ms", "trailing", "drain_s", "cpu_us_per_scalar",
            "others_cpu_us_per_scalar", "others_cpu_plain_s", "drain_cpu_s")
    samples: dict[str, dict[str, list[float]]] = {name: {k: [] for k in keys} for name in names}
    capped = dict.fromkeys(names, 0)
    for round_ in range(rounds):
        gc.collect()
        order = list(names)
        random.Random(round_).shuffle(order)  # no case always follows the same one
        for name in order:
            case, s = cases[name], samples[name]
            others0 = descendants_cpu(extra)
            none_wall, none_cpu = _plain_chunk(step, chunk)
            others1 = descendants_cpu(extra)
            wall, cpu, ran = _logging_chunk(step, case, next_step[name], chunk)
            next_step[name] += chunk
            drain_clock, drain_cpu = time.perf_counter(), time.process_time()
            case.drain()
            drain_s, drain_cpu = time.perf_counter() - drain_clock, time.process_time() - drain_cpu
            others2 = descendants_cpu(extra)
            scalars = 10 * chunk
            s["ratio"].append((wall / ran) / (none_wall / chunk))
            s["added_us"].append((wall / ran - none_wall / chunk) * 1e6)
            s["step_ms"].append(wall / ran * 1e3)
            s["none_ms"].append(none_wall / chunk * 1e3)
            s["trailing"].append(ran - chunk)
            s["drain_s"].append(drain_s)
            s["drain_cpu_s"].append(drain_cpu)
            s["cpu_us_per_scalar"].append((cpu - none_cpu / chunk * ran) / scalars * 1e6)
            s["others_cpu_us_per_scalar"].append(cpu_delta(others1, others2) / scalars * 1e6)
            s["others_cpu_plain_s"].append(cpu_delta(others0, others1))
            capped[name] += ran - chunk >= MAX_TRAILING_STEPS
    none_ms = [v for name in names for v in samples[name]["none_ms"]]
    rows: dict[str, dict[str, Any]] = {"no logging": {"step_ms": median(none_ms), "x_none": 1.0}}
    for name in names:
        s = samples[name]
        rows[name] = {"step_ms": median(s["step_ms"]), "x_none": median(s["ratio"]),
                      "added_us": median(s["added_us"]), "cpu_us_per_scalar": median(s["cpu_us_per_scalar"]),
                      "others_cpu_us_per_scalar": median(s["others_cpu_us_per_scalar"]),
                      "trailing_steps": median(s["trailing"]), "trailing_capped": capped[name],
                      "drain_s": median(s["drain_s"])}
    for ours, floor in _FLOORS.items():
        rows[ours]["x_floor"] = rows[ours]["x_none"] / rows[floor]["x_none"]
        # The same comparison paired within each round (ours and its floor ran seconds apart, at
        # one machine speed): the median of the per-round quotients, and their quartiles.
        per_round = sorted(o / f for o, f in zip(samples[ours]["ratio"], samples[floor]["ratio"]))
        rows[ours]["x_floor_by_round"] = median(per_round)
        rows[ours]["x_floor_by_round_quartiles"] = [per_round[len(per_round) // 4], per_round[(3 * len(per_round)) // 4]]
    ours = [case for case in cases.values() if isinstance(case, _Ours)]
    return {
        "chunk_steps": chunk, "rounds": rounds, "torch_threads": 1, "scalars_per_step": 10,
        "model": f"Linear({IN},{HIDDEN})-ReLU-Linear({HIDDEN},1) (no biases), batch {BATCH}, SGD, 1 torch thread",
        "step_ms_no_logging": rows["no logging"]["step_ms"], "gc": "enabled; gc.collect() before each round",
        "setup_s": round(setup_s, 1), "max_trailing_steps": MAX_TRAILING_STEPS,
        "rows": rows, "samples": samples,
        "threads": sorted(t.name for t in threading.enumerate()),
        "other_processes": {str(pid): cmdline(pid) for pid in sorted(descendants_cpu(extra))},
        "stats_fields": ours[0].fields if ours else [],
        "stats_sinks": {case.name: case.sink_names for case in ours},
        "stats_local_sinks_waited_for": {case.name: case.local for case in ours},
        "agent_pid": {case.name: case.agent_pid for case in ours},
    }


def render(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        (f"tiny training loop: {result['model']}, {result['step_ms_no_logging']:.3f} ms/step without logging; "
        f"10 scalars logged per step in 2 calls"),
        (f"  {result['rounds']} rounds of {result['chunk_steps']}-step chunks, each right after its own no-logging chunk; "
        "medians of the paired ratios; preliminary (shared, noisy machine)"),
        ("  where it runs: the loop on this process's main thread; floor json+tb: + 1 drain thread (every 50 ms, "
        "one orjson.dumps + os.write); floor +mlflow: its drain thread also pickles to an ingest process "
        "(nice 10, MlflowClient.log_batch into sqlite); ours: the tracker's writer thread and agent link "
        "reader, + the delivery agent process (+ the MLflow helper process it starts)"),
        ("  machine note: background work runs beside the loop only while a second core is free; a busy second "
        "core slows the loop"),
        (f"  {'case':<27}{'ms/step':>8}{'x none':>8}{'+us/step':>9}{'x floor':>8}{'x fl/rnd':>9}{'cpu us/sc':>10}"
        f"{'other us/sc':>12}{'+plain':>7}{'drain s':>8}"),
    ]
    for name, row in rows.items():
        if name == "no logging":
            lines.append(f"  {name:<27}{row['step_ms']:>8.3f}{1.0:>8.3f}")
            continue
        x_floor = f"{row['x_floor']:>8.3f}" if "x_floor" in row else f"{'-':>8}"
        x_floor += f"{row['x_floor_by_round']:>9.3f}" if "x_floor_by_round" in row else f"{'-':>9}"
        lines.append(f"  {name:<27}{row['step_ms']:>8.3f}{row['x_none']:>8.3f}{row['added_us']:>9.1f}{x_floor}"
                     f"{row['cpu_us_per_scalar']:>10.2f}{row['others_cpu_us_per_scalar']:>12.2f}"
                     f"{row['trailing_steps']:>7.0f}{row['drain_s']:>8.2f}")
    for name, row in rows.items():
        if "x_floor_by_round_quartiles" in row:
            q1, q3 = row["x_floor_by_round_quartiles"]
            lines.append(f"  {name}: x floor per round, quartiles {q1:.3f} .. {q3:.3f}")
    lines.append("  (x floor: ours' median paired ratio / its floor's; x fl/rnd: the median over rounds of ours' ratio "
                 "/ its floor's in the same round; cpu us/sc: this process's CPU beyond the paired "
                 "no-logging chunk, per scalar logged; other us/sc: descendant processes' CPU across the chunk and its "
                 "MLflow drain, per scalar; +plain: median plain steps run after logging until the local part caught "
                 "up, counted in the chunk; drain s: untimed wait for the MLflow part between pairs)")
    threads: dict[str, int] = {}
    for name in result.get("threads", []):
        threads[name] = threads.get(name, 0) + 1
    lines.append("  threads in this process (all cases together): "
                 + ", ".join(f"{n} x {name}" if n > 1 else name for name, n in threads.items()))
    lines.append(f"  other processes: {len(result.get('other_processes', {}))} (the floor's ingest process, "
                 "our MLflow helper, and any agent; see the result's other_processes)")
    agents = {k: v for k, v in result.get("agent_pid", {}).items() if v is not None}
    if agents:
        lines.append(f"  agent_pid reported by stats(): {agents}")
    return "\n".join(lines)
