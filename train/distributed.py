"""PyTorch's own DistributedDataParallel under ``torchrun``: process group set-up and sharding."""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Dist:
    """This process's place: ``rank`` of ``world`` processes (1 process when not under torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        """Join the process group torchrun describes (gloo on CPU, nccl on GPU), if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's (already shuffled) sample indices: every world-th one.

        The tail that does not divide evenly is dropped so every rank runs the same number of steps.
        """
        usable = len(indices) - len(indices) % self.world
        return indices[self.rank:usable:self.world]

    def gather(self, obj: object) -> list[object]:
        if self.world == 1:
            return [obj]
        out: list[object] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, value: object) -> object:
        """Rank 0's ``value`` on every rank (so all ranks take the same decisions)."""
        return self.gather(value)[0]

    def close(self) -> None:
        """Leave the process group together: every rank waits here for the others (rank 0 evaluates
        first), so none tears its gloo connections down under a peer that still uses them."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
