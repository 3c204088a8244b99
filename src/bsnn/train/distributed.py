"""Multi-process training with PyTorch DDP, launched by ``torchrun`` (nothing home-made).

``torchrun --nproc_per_node=N -m bsnn train --recipe ...``: every process trains on its shard of each
epoch (``DistributedSampler``; ``data.batch_size`` is per process), gradients are averaged by DDP, and
rank 0 alone logs and writes checkpoints. Online training steps T times per batch: in real-time mode
the optimizer needs the averaged gradient at every step, so every backward all-reduces; in accumulated
mode the first T-1 backwards run under ``no_sync`` and only the last one all-reduces.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from ..nn.binary import BinaryParameter

__all__ = ["DistInfo", "init_from_env", "is_distributed", "rank", "world_size", "wrap", "ShardSampler",
           "all_reduce_", "check_identical_binary_weights", "broadcast_buffers_"]


@dataclass
class DistInfo:
    """This process's place in a DDP run: global rank, number of processes and local rank (GPU index)."""
    rank: int
    world_size: int
    local_rank: int


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(device_type: str) -> DistInfo | None:
    """Join the process group that torchrun describes in the environment (None when not launched by it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not is_distributed():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def wrap(model: torch.nn.Module, device: torch.device, sync_bn: bool) -> DistributedDataParallel:
    """Wrap ``model`` in ``DistributedDataParallel`` (after converting BatchNorm to ``SyncBatchNorm`` with
    ``sync_bn``; without it, rank 0's buffers are broadcast before every forward)."""
    if sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # Without SyncBN, rank 0's BN running statistics are broadcast before every forward so that all
    # ranks evaluate identically; with SyncBN they are already equal.
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    sync_buffers = {("forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"): not sync_bn}
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   **sync_buffers)


class ShardSampler(Sampler):
    """Every ``world``-th index starting at ``rank``: disjoint shards, no padding (exact evaluation)."""

    def __init__(self, n: int, rank_: int, world: int):
        self.indices = list(range(rank_, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def all_reduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (a no-op without a process group); returns ``t``."""
    if is_distributed():
        dist.all_reduce(t)
    return t


@torch.no_grad()
def check_identical_binary_weights(model: torch.nn.Module) -> None:
    """Invariant: every rank holds the same binary weights. Compares a float64 checksum of the signs."""
    if not is_distributed():
        return
    total = torch.zeros((), dtype=torch.float64)
    for p in model.parameters():
        if isinstance(p, BinaryParameter):
            w = (p.detach() >= 0).to(torch.float64).flatten()
            total += (w * torch.arange(1, w.numel() + 1, dtype=torch.float64, device=w.device)).sum().cpu()
    sums = [torch.zeros((), dtype=torch.float64) for _ in range(world_size())]
    dist.all_gather_object(sums, total)
    if any(s != sums[0] for s in sums):
        raise RuntimeError(f"binary weights differ across ranks (checksums {[float(s) for s in sums]})")


@torch.no_grad()
def broadcast_buffers_(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics): without SyncBN each rank's
    last training forwards updated them from its own shard, and the evaluated and saved model must be
    one model. A no-op without DDP."""
    if not is_distributed():
        return
    for b in model.buffers():
        dist.broadcast(b, 0)
