"""One contract test over every sink: built-ins, a third-party sink installed through an entry
point, and the test sinks. Each must take a full run of every event kind, in both modes, twice."""
from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

from tracking import Tracker
from tracking.sinks import available_sinks, load_sink_class, resolve_sink

from helpers.sinks import RecordingSink

BUILTIN = ["json", "tensorboard", "mlflow"]


@pytest.fixture
def third_party_sink(tmp_path, monkeypatch):
    """A distribution that ships a sink under the `tracking.sinks` entry-point group, as pip would lay it out."""
    site = tmp_path / "site"
    pkg = site / "acme_sink"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import json, os

        class AcmeSink:
            \"\"\"Writes what it sees to acme.jsonl in the run directory, with the pid that saw it.\"\"\"

            name = "acme"

            def open(self, run):
                self._file = open(os.path.join(run.run_dir, "acme.jsonl"), "a")
                self._seen(["open", run.run_id])

            def write(self, events):
                for event in events:
                    self._seen(["event", event[0], event[1]])

            def flush(self):
                self._file.flush()

            def close(self, status):
                self._seen(["close", status])
                self._file.close()

            def _seen(self, what):
                self._file.write(json.dumps([os.getpid(), *what]) + "\\n")
    """))
    info = site / "acme_sink-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sink\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tracking.sinks]\nacme = acme_sink:AcmeSink\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield "acme"


def test_third_party_sink_is_found_by_name_and_built_in_the_agent(third_party_sink, make_tracker):
    import json
    import os

    assert "acme" in available_sinks()
    tracker = make_tracker(["json", "acme"])
    run_id = tracker.start_run()
    tracker.log_metric("loss", 0.5, step=0)
    report = tracker.end_run()
    assert report.sinks["acme"]["placement"] == "agent"
    seen = [json.loads(line) for line in open(tracker.base_dir / run_id / "acme.jsonl")]
    pids = {pid for pid, *_ in seen}
    assert [what for _, *what in seen] == [["open", run_id], ["event", "metrics", {"loss": 0.5}], ["close", "FINISHED"]]
    assert len(pids) == 1 and os.getpid() not in pids  # the agent's process found it by its entry point


def _log_every_kind(tracker, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"\x00" * 1024)
    tracker.create_experiment("contract_other")
    for step in range(20):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 20.0}, step=step)
        tracker.log_metric("lr", 1e-3)
    tracker.log_params({"extra.param": 1, "list": [1, 2]})
    tracker.set_tag("status", "contract")
    tracker.log_artifact(artifact, "ckpt/weights.bin")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    tracker.log_figure(fig, "curve")
    plt.close(fig)
    tracker.log_metric("nan_metric", float("nan"), step=0)


@pytest.mark.parametrize("mode", ["async", "sync"])
@pytest.mark.parametrize("sink_name", BUILTIN + ["recording"])
def test_every_sink_takes_every_event_kind_in_both_modes_run_after_run(sink_name, mode, make_tracker, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # sinks with a cwd-relative default (MLflow's store) write here
    sink = RecordingSink() if sink_name == "recording" else resolve_sink(sink_name)
    tracker = make_tracker([sink], mode=mode)
    for attempt in range(2):  # a sink instance is reopened for the tracker's next run
        tracker.start_run(f"contract{attempt}", config={"model": {"name": "mlp", "dims": [8, 4]}})
        _log_every_kind(tracker, tmp_path)
        assert tracker.flush(timeout_s=60)
        report = tracker.end_run(timeout_s=60)
        assert report.complete, report.summary()
        assert report.sinks[sink.name]["errors"] == 0 and report.sinks[sink.name]["closed"]
        assert report.events == 46  # 40 metrics events, params, tag, artifact, figure, nan, experiment


def test_builtin_sinks_are_registered_as_entry_points():
    names = {ep.name for ep in importlib.metadata.entry_points(group="tracking.sinks")}
    if not names:
        pytest.skip("the project is not installed (pip install -e .); entry points come from its metadata")
    assert set(BUILTIN) <= names


def test_an_object_that_is_not_a_sink_is_refused(tmp_path):
    with pytest.raises(TypeError, match="lacks open, write, flush, close"):
        Tracker([object()], base_dir=tmp_path)


class _Probe:
    """Wraps a sink: keeps what `open` was told about a resume and the steps `write` was given."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.resumes: list = []
        self.steps: list[int] = []

    def open(self, run):
        self.resumes.append(run.resume)
        return self.inner.open(run)

    def write(self, events):
        self.steps += [event[2] for event in events if event[0] == "metrics"]
        self.inner.write(events)

    def flush(self):
        self.inner.flush()

    def close(self, status):
        self.inner.close(status)

    def __getattr__(self, name):  # checkpoint, rebuild_on_resume, blocking: the sink's own
        return getattr(self.inner, name)


def _new_sink(sink_name: str, tmp_path):
    if sink_name == "recording":
        return RecordingSink()
    if sink_name == "mlflow":
        return load_sink_class("mlflow")(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    return resolve_sink(sink_name)


def _steps_in(sink_name: str, sink, run_dir, tmp_path) -> list[int]:
    """The steps of metric "x" as the sink's own reader finds them (the recording sink: in memory)."""
    if sink_name == "json":
        import csv

        return [int(row["step"]) for row in csv.DictReader(open(run_dir / "step_metrics.csv"))]
    if sink_name == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
        accumulator.Reload()
        return [event.step for event in accumulator.Scalars("x")]
    if sink_name == "mlflow":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        (found,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
        return sorted(m.step for m in client.get_metric_history(found.info.run_id, "x"))
    return [event[2] for event in sink.events if event[0] == "metrics"]


@pytest.mark.parametrize("sink_name", BUILTIN + ["recording"])
def test_a_resumed_sink_is_told_its_cursor_checkpoint_and_facts_and_gets_only_what_follows(sink_name, tmp_path):
    """The contract of `run.resume` (tracking.sinks.base): a deliverer dies after committing 20 of 30
    events and handing over 5 more; the next is opened with `Resume(committed_seq, checkpoint,
    facts)` as the first one left them, and writes start right after the cursor (from the first
    event for a sink that rebuilds). Read back from the sink's own store: every step once (at least
    once for a sink with neither a checkpoint nor a rebuild)."""
    from tracking.delivery.cursors import DeliveryStore
    from tracking.delivery.engine import RetryPolicy, SinkSlot
    from tracking.journal import JournalReader, read_journal
    from tracking.sinks.base import Resume, RunContext

    journal_only = Tracker([], mode="sync", base_dir=tmp_path / "runs")
    run_id = journal_only.start_run("resumed")
    for step in range(30):
        journal_only.log_metric("x", float(step), step=step)
    journal_only.end_run()
    run_dir = tmp_path / "runs" / run_id
    header = read_journal(run_dir).header
    run = RunContext(run_id=run_id, run_name="resumed", run_dir=run_dir, experiment=header["experiment"],
                     config={}, start_time=header["start_time"], mode="async")
    retry = RetryPolicy(initial_s=0.01, max_s=0.02)

    first, store = _Probe(_new_sink(sink_name, tmp_path)), DeliveryStore(run_dir)
    slot = SinkSlot.claim(first, run, store, retry=retry)
    slot.open()
    slot.deliver_from(JournalReader(run_dir), upto=20, max_events=20)
    slot.commit()
    committed = (slot.committed_seq, slot.checkpoint, dict(slot.facts))
    slot.deliver_from(JournalReader(run_dir), upto=25, max_events=5)  # handed over, never committed
    assert first.resumes == [None] and first.steps == list(range(25)) and committed[0] == 20
    store.release_all()  # the deliverer dies here: no close()

    second = _Probe(_new_sink(sink_name, tmp_path))
    again = SinkSlot.claim(second, run, DeliveryStore(run_dir), retry=retry)
    again.open()
    while again.delivered_seq < 30:
        again.deliver_from(JournalReader(run_dir), upto=30)
    again.close("FINISHED")
    rebuilds = getattr(second.inner, "rebuild_on_resume", False)
    if rebuilds:
        assert second.resumes == [Resume(committed_seq=0, checkpoint=None, facts=committed[2])]
        assert second.steps == list(range(30))
    else:
        assert second.resumes == [Resume(*committed)]
        assert second.steps == list(range(20, 30))
    has_checkpoint = callable(getattr(second.inner, "checkpoint", None))
    exactly_once = rebuilds or has_checkpoint or sink_name == "mlflow"  # MLflow's SQL store drops repeats
    assert exactly_once or sink_name == "recording"
    found = _steps_in(sink_name, second.inner, run_dir, tmp_path)
    assert found == (list(range(30)) if exactly_once else list(range(20, 30)))
