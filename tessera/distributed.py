"""Data-parallel glue: one training script for 1..N processes.

`torchrun --nproc-per-node N -m tessera train dit ...` sets RANK / WORLD_SIZE /
LOCAL_RANK; without them everything here is a no-op and training runs in one process.
With them, the process group uses NCCL on GPUs and gloo on CPUs, and `shard` applies
FSDP (`fully_shard`) to every transformer block and then to the whole model, so each
rank holds 1/N of the parameters, gradients and optimiser state.

Distribution is a wrapper: the model code does not know about it. Sequence parallelism
would replace `tessera.models.dit.attention`, the single place where tokens meet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init() -> Dist:
    """Join the process group started by torchrun, if any; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    if world > 1 and not cuda:
        # share the cores: N processes each using every core would oversubscribe them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Dist(rank, world, device)


def shard(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """FSDP over `model.blocks` and the root; returns the model unchanged in one process."""
    if not d.active:
        return model
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a (possibly sharded) tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor, gathered from every rank (a collective: all ranks must call it)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def like(shard_: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Wrap a local shard the way `param` is sharded (identity for ordinary tensors)."""
    if hasattr(param, "to_local"):
        from torch.distributed.tensor import DTensor

        return DTensor.from_local(shard_, param.device_mesh, param.placements, shape=param.shape, stride=param.stride())
    return shard_


def shard_of(whole: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The part of `whole` that this rank holds of `param`, sharded like it (identity for ordinary tensors).

    Every rank passes the same `whole`, so no data moves between ranks: this is how a state saved
    whole by N processes loads into M.
    """
    if hasattr(param, "to_local"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(whole.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
    return whole.to(param.device)


def mean(x: float, d: Dist) -> float:
    """Average a number over ranks."""
    if not d.active:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / d.world


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()
