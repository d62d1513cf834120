"""Secret-looking config keys are masked in what leaves the machine (MLflow params and tags,
TensorBoard text) while config.json and the journal keep what the user gave."""
from __future__ import annotations

import json

from tracking.journal import read_journal
from tracking.core.redact import redact_config
from tracking.journal.rundir import read_meta

CONFIG = {"model": {"name": "mlp"}, "db": {"password": "hunter2", "host": "h"}, "API_KEY": "k-123",
          "training": {"lr": 0.1}}


def test_redact_config_masks_at_any_depth_and_case():
    assert redact_config(CONFIG) == {"model": {"name": "mlp"}, "db": {"password": "***", "host": "h"},
                                     "API_KEY": "***", "training": {"lr": 0.1}}
    assert redact_config({"my_field": 1}, ["field"]) == {"my_field": "***"}


def test_secrets_stay_local_and_are_masked_in_mlflow_and_tensorboard(make_tracker, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tracking.sinks.mlflow import MLflowSink

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = make_tracker(["json", "tensorboard", MLflowSink(tracking_uri=uri)])
    run_id = tracker.start_run("secrets", config=CONFIG)
    tracker.log_params({"service_token": "tok-999"})
    tracker.set_tag("github_token", "ghp-abc")
    tracker.end_run()
    run_dir = tracker.base_dir / run_id

    local = json.load(open(run_dir / "config.json"))
    assert local["db"]["password"] == "hunter2" and local["service_token"] == "tok-999"
    assert read_journal(run_dir).header["config"]["API_KEY"] == "k-123"

    run = MlflowClient(tracking_uri=uri).get_run(read_meta(run_dir)["mlflow_run_id"])
    assert run.data.params["db.password"] == "***" and run.data.params["API_KEY"] == "***"
    assert run.data.params["service_token"] == "***" and run.data.params["db.host"] == "h"
    assert run.data.tags["github_token"] == "***"

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    texts = " ".join(t.tensor_proto.string_val[0].decode() for tag in acc.Tags()["tensors"] for t in acc.Tensors(tag))
    assert "hunter2" not in texts and "k-123" not in texts and "tok-999" not in texts and "ghp-abc" not in texts
    assert "***" in texts
