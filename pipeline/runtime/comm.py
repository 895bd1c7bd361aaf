"""The distribution hook the training loop and balancers use: rank, world size and all-reduce.

The loop and the balancer math never import ``torch.distributed`` directly; a single process uses
:class:`LocalComm`, a Ray Train / DDP worker passes a communicator backed by a process group.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Pending(Protocol):
    """A started collective operation."""

    def wait(self) -> Any:
        """Block until the operation has finished (on an accelerator: until it is ordered before later work)."""
        ...


class Comm(Protocol):
    rank: int
    world_size: int

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the element-wise mean of ``tensor`` over all ranks (every rank gets the same)."""
        ...

    def start_all_reduce_sum(self, tensor: torch.Tensor) -> Pending:
        """Start summing ``tensor`` over all ranks in place, without waiting; the sum is there after ``wait()``."""
        ...

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order (every rank gets the same list)."""
        ...


class LocalComm:
    """One process: the mean over ranks is the tensor itself."""

    rank = 0
    world_size = 1

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def start_all_reduce_sum(self, tensor: torch.Tensor) -> Pending:
        return _Done()

    def gather_objects(self, obj: Any) -> list[Any]:
        return [obj]


class _Done:
    """A collective of one rank: finished when started."""

    def wait(self) -> None:
        return None
