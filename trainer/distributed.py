"""Small helpers around ``torch.distributed`` for data-parallel training.

Runs on the caller's thread of every rank. Each helper is safe to call without a process
group: it then behaves as a single process of world size 1, so the trainer has one code path.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

__all__ = [
    "all_reduce_mean",
    "cleanup",
    "init_from_env",
    "is_distributed",
    "is_rank_zero",
    "local_rank",
    "rank",
    "shard_indices",
    "world_size",
]

_logger = logging.getLogger(__name__)

_REQUIRED_ENV = ("RANK", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """Return True when a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Return this process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Return the number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Return ``LOCAL_RANK`` from the environment (0 when unset), as set by ``torchrun``."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_rank_zero() -> bool:
    """Return True on rank 0, and always without a process group."""
    return rank() == 0


def init_from_env() -> bool:
    """Initialise the process group from ``torchrun``-style env vars when ``WORLD_SIZE`` > 1.

    Uses ``nccl`` when CUDA is available and ``gloo`` otherwise. Returns True when a process
    group is (now) initialised, False for a single-process run.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    missing = [name for name in _REQUIRED_ENV if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; "
            "launch with torchrun or set RANK, MASTER_ADDR and MASTER_PORT"
        )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://")
    _logger.info("initialised %s process group: rank %d of %d", backend, rank(), world_size())
    return True


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Return the element-wise mean of ``tensor`` over all ranks (a copy; the input is unchanged)."""
    if not is_distributed():
        return tensor.clone()
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / world_size()


def shard_indices(
    n_items: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, pad: bool = True
) -> torch.Tensor:
    """Return this rank's indices into ``n_items`` items, like ``DistributedSampler``.

    Every rank draws the same permutation (seeded by ``seed + epoch``) and takes every
    ``world_size``-th index starting at its rank. With ``pad`` the list is padded by wrapping
    around so all ranks get the same count: DDP needs every rank to run the same number of
    steps, or the gradient all-reduce of the longer rank waits forever.
    """
    if shuffle:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n_items, generator=generator)
    else:
        order = torch.arange(n_items)
    size = world_size()
    if pad and n_items % size:
        # ceil-divide padding; repeat() covers the (odd) case of fewer items than ranks.
        n_padded = -(-n_items // size) * size
        order = order.repeat(-(-n_padded // max(n_items, 1)))[:n_padded]
    return order[rank() :: size]


def cleanup() -> None:
    """Destroy the process group if one is initialised; safe to call more than once."""
    if is_distributed():
        dist.destroy_process_group()
