"""One contract test over every sink: built-ins, a third-party sink installed through an entry
point, and the test sinks. Each must take a full run of every event kind, in both modes, twice."""
from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

from tracking import Tracker
from tracking.sinks import available_sinks, resolve_sink

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
