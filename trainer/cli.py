"""`python -m trainer`: train the demo MLP on synthetic battery-ageing data, tracked end to end.

Runs on the main thread of each process; under `torchrun` every rank runs it, rank 0 logs.

    python -m trainer [--epochs N] [--tracker {local,mlflow,dual}] [--mode {async,sync}]
                      [--mlflow-uri URI] [--run-name NAME] [--log-every-n-steps N] [--seed N]
                      [section.key=value ...]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

from trainer import distributed
from trainer.demo import default_config, run_demo

__all__ = ["main", "apply_override"]

BASE_DIR = "artifacts/runs"
DEFAULT_MLFLOW_URI = "sqlite:///artifacts/mlruns/mlflow.db"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line that names what is wrong and the valid choices (argparse's own message does).
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m trainer", description="Train the battery-ageing demo MLP with tracking.")
    p.add_argument("--epochs", type=int, help="training epochs (default from the config: 100, early stopping on)")
    p.add_argument("--tracker", choices=["local", "mlflow", "dual"], default="dual")
    p.add_argument("--mode", choices=["async", "sync"], default="async")
    p.add_argument("--mlflow-uri", default=DEFAULT_MLFLOW_URI, help=f"MLflow tracking URI (default {DEFAULT_MLFLOW_URI})")
    p.add_argument("--run-name", default="demo_mlp")
    p.add_argument("--log-every-n-steps", type=int, help="log train/loss and train/grad_norm every N steps")
    p.add_argument("--seed", type=int)
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="config overrides, e.g. training.learning_rate=3e-4 model.hidden_dims=[128,64]")
    return p


def apply_override(config: dict[str, Any], override: str) -> None:
    """Set `section.key=value` in `config`; the key must exist. Values are JSON, else text."""
    path, sep, raw = override.partition("=")
    if not sep or not path:
        raise ValueError(f"override {override!r} is not of the form section.key=value")
    node: Any = config
    parts = path.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "the config"
            valid = ", ".join(sorted(node)) if isinstance(node, dict) else "(none: not a section)"
            raise ValueError(f"unknown config key {path!r}: {where} has {valid}")
        if depth == len(parts) - 1:
            try:
                node[part] = json.loads(raw)
            except json.JSONDecodeError:
                node[part] = raw
        node = node[part]


def _build_config(args: argparse.Namespace) -> dict[str, Any]:
    config = default_config()
    for override in args.overrides:
        apply_override(config, override)
    if args.epochs is not None:
        config["training"]["epochs"] = args.epochs
    if args.log_every_n_steps is not None:
        config["training"]["log_every_n_steps"] = args.log_every_n_steps
    if args.seed is not None:
        config["seed"] = config["data"]["seed"] = args.seed
    return config


def _tracker(args: argparse.Namespace) -> Any:
    from tracking import create_tracker

    if args.tracker == "local":
        return create_tracker("local", base_dir=BASE_DIR, use_tensorboard=True, mode=args.mode)
    if args.tracker == "mlflow":
        return create_tracker("mlflow", tracking_uri=args.mlflow_uri, experiment_name="battery_degradation",
                              mode=args.mode, base_dir=BASE_DIR)
    return create_tracker("dual", local_base_dir=BASE_DIR, use_tensorboard=True, mlflow_tracking_uri=args.mlflow_uri,
                          mlflow_experiment_name="battery_degradation", mode=args.mode)


def _mlflow_uri_of(tracker: Any) -> str | None:
    return getattr(tracker, "mlflow_tracking_uri", None) or getattr(tracker, "tracking_uri", None)


def _report(tracker: Any, result: dict[str, Any], seconds: float) -> None:
    final = result["final"]
    print(f"trained {final['epochs_run']} epochs in {seconds:.1f} s (best epoch {final['best_epoch']})")
    for key in ("val_rmse", "val_mae", "holdout_rmse", "holdout_mae"):
        print(f"  {key:<13} {final[key]:.4f}")
    run_dir = tracker.get_run_dir()
    print(f"run directory: {run_dir}")
    print(f"  metrics: {run_dir / 'metrics.json'}")
    if (run_dir / "tensorboard").exists():
        print(f"TensorBoard:  tensorboard --logdir {shlex.quote(str(Path(BASE_DIR)))}")
    uri = _mlflow_uri_of(tracker)
    if uri:
        print(f"MLflow UI:    mlflow ui --backend-store-uri {shlex.quote(uri)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = _build_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.log_every_n_steps is not None and args.log_every_n_steps < 1:
        parser.error("--log-every-n-steps must be >= 1")
    distributed.init_from_env()
    try:
        tracker = _tracker(args)
        started = time.perf_counter()
        with tracker:
            tracker.start_run(run_name=args.run_name, config=config)
            tracker.set_tag("world_size", distributed.world_size())
            result = run_demo(config, tracker=tracker)
        if distributed.is_rank_zero():
            _report(tracker, result, time.perf_counter() - started)
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
