"""PyTorch DDP plumbing: the same code runs alone or under ``torchrun`` (gloo on CPU, NCCL on GPUs).

    torchrun --nproc_per_node 2 -m kdmobile.cli distill configs/mnist_quick.toml -o build/runs/ddp

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without
them everything runs in one process and no collective is called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Rank, world size and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup() -> DistEnv:
    """Join the process group ``torchrun`` describes (if any) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world <= 1:
        return DistEnv(device=device)
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        here = True
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, here)


def teardown(env: DistEnv) -> None:
    if env.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(env: DistEnv, values: list[float]) -> list[float]:
    """Sum a few floats over all ranks (returns them unchanged in a single process)."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device if env.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast_flag(env: DistEnv, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if not env.distributed:
        return flag
    t = torch.tensor(
        [1 if flag else 0], dtype=torch.int64, device=env.device if env.device.type == "cuda" else "cpu"
    )
    dist.broadcast(t, src=0)
    return bool(t.item())
