"""Tests for trainer.distributed and DDP training: two gloo ranks on this machine.

The workers run in processes started by torch.multiprocessing.spawn; they report through JSON
files because spawned processes cannot return values.
"""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from trainer import distributed
from trainer.models import build_model
from trainer.sample import Sample
from trainer.trainer import Trainer

_WORLD_SIZE = 2


def _samples(n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.sin(x[:, :1]) + x[:, 1:2] * x[:, 2:3]
    return [Sample(meta={}, x=x[i], y=y[i]) for i in range(n)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        LOCAL_RANK=str(rank), WORLD_SIZE=str(_WORLD_SIZE),
    )
    torch.set_num_threads(1)
    assert distributed.init_from_env()
    try:
        torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's weights
        model = build_model("mlp", input_dim=4, hidden_dims=[8], dropout=0.0)
        trainer = Trainer(model, {"epochs": 3, "batch_size": 8, "learning_rate": 1e-2}, device="cpu")
        val = _samples(21, 1)  # odd size: the ranks' val shards differ in length
        history = trainer.fit(_samples(50, 0), val)
        x = torch.stack([torch.as_tensor(s.x) for s in val])
        y = torch.stack([torch.as_tensor(s.y) for s in val])
        with torch.no_grad():
            full_val_rmse = ((model(x) - y) ** 2).mean().sqrt().item()
        report = {
            "history": history,
            "best_epoch": trainer.best_epoch,
            "full_val_rmse": full_val_rmse,
            "params": [p.detach().flatten().tolist() for p in model.parameters()],
            "mean": distributed.all_reduce_mean(torch.tensor([float(rank)])).item(),
            "is_rank_zero": distributed.is_rank_zero(),
        }
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump(report, handle)
    finally:
        distributed.cleanup()


def test_two_gloo_ranks_train_to_identical_averaged_history(tmp_path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=_WORLD_SIZE, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(_WORLD_SIZE)]
    assert reports[0]["history"] == reports[1]["history"]
    assert reports[0]["params"] == reports[1]["params"]
    assert [r["is_rank_zero"] for r in reports] == [True, False]
    assert reports[0]["mean"] == reports[1]["mean"] == 0.5
    # Each rank evaluated only its half of val: matching the full-set RMSE proves the reduction.
    best = reports[0]["best_epoch"]
    assert np.isclose(reports[0]["history"]["val_rmse"][best], reports[0]["full_val_rmse"], rtol=1e-5)


def test_helpers_act_as_single_process_without_process_group(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() is False
    assert not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_rank_zero()
    assert torch.equal(distributed.all_reduce_mean(torch.tensor([2.0])), torch.tensor([2.0]))
    assert sorted(distributed.shard_indices(5, shuffle=True, seed=1).tolist()) == [0, 1, 2, 3, 4]
    distributed.cleanup()


def test_init_from_env_names_missing_variables(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="RANK, MASTER_ADDR, MASTER_PORT not set"):
        distributed.init_from_env()
