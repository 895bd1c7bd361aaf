"""Run a function on N real ``torch.distributed`` ranks (gloo over loopback), one process each."""

from __future__ import annotations

import multiprocessing
import pickle
import traceback
from collections.abc import Callable
from typing import Any

import torch.distributed as dist

from tests.ray_cluster import free_port


def _rank_main(fn: Callable[[int], Any], rank: int, world_size: int, port: int, results: Any) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
        # plain pickle bytes: tensors put on the queue directly would be shared through file descriptors
        # that vanish when this process exits before the test process reads them
        results.put((rank, pickle.dumps(fn(rank)), None))
    except BaseException:  # noqa: BLE001 - reported to the test process
        results.put((rank, None, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(fn: Callable[[int], Any], world_size: int = 2, timeout_s: float = 120.0) -> list[Any]:
    """``fn(rank)`` on each rank of a fresh process group; returns the results in rank order.

    ``fn`` must be a module-level function (it is pickled into spawned processes).
    """
    context = multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    port = free_port()
    processes = [
        context.Process(target=_rank_main, args=(fn, rank, world_size, port, results)) for rank in range(world_size)
    ]
    for p in processes:
        p.start()
    gathered = {}
    for _ in processes:
        rank, value, error = results.get()
        if error is not None:
            raise AssertionError(f"rank {rank} failed:\n{error}")
        gathered[rank] = pickle.loads(value)
    for p in processes:
        p.join(timeout_s)
    return [gathered[r] for r in range(world_size)]
