"""The one place that knows about devices and process groups.

``setup(device)`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``):
several processes join a process group (NCCL on CUDA, gloo on CPU) and each takes its
local GPU; a single process runs as world size 1 without a process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pixmim.config import check_world


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device: str, gpus: int = 0, nodes: int = 1, section: str = "train") -> DistInfo:
    """Join torchrun's process group if there is one, and pick this process's device. The
    world size is torchrun's WORLD_SIZE; given the config's layout (``gpus`` >= 1, ``nodes``
    of ``section``), a launch of another number of processes is a ConfigError."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_world(world, gpus, nodes, section)
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def wrap(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when several processes train together."""
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def world_size() -> int:
    """The size of the process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over every process of the group, differentiable (the backward
    sums the gradients over the processes too); ``t`` itself without a process group."""
    if world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch normalisation with the batch statistics of all processes of the group, through
    autograd-aware all-reduces that gloo runs too (torch's SyncBatchNorm needs CUDA): the
    mean and biased variance over every process's batch normalise, the unbiased one updates
    the running variance, as BatchNorm over the whole batch does. One process, or eval:
    plain BatchNorm. Inputs of 2 or more dimensions, channels second."""

    def _check_input_dim(self, x) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        count = sum_over_ranks(torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype,
                                            device=x.device))
        mean = sum_over_ranks(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = sum_over_ranks((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
