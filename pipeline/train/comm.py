"""The distribution hook the training loop and balancers use: rank, world size and all-reduce.

The loop and the balancer math never import ``torch.distributed`` directly; a single process uses
:class:`LocalComm`, a Ray Train / DDP worker passes a communicator backed by a process group.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Comm(Protocol):
    rank: int
    world_size: int

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the element-wise mean of ``tensor`` over all ranks (every rank gets the same)."""
        ...


class LocalComm:
    """One process: the mean over ranks is the tensor itself."""

    rank = 0
    world_size = 1

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor
