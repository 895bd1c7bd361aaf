"""Reading a training epoch's micro-batches ahead of the loop, on a background thread.

The memory-mapped gather (:meth:`pipeline.data.folds.ArraySet.read`) and, on CUDA, the copy into pinned
(page-locked) host memory run on one worker thread, ``depth`` micro-batches ahead, so the training thread
only starts the asynchronous host-to-device copies (``non_blocking=True`` overlaps only from pinned memory).
The batches and their order are exactly those of reading in the loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

HostBatch = dict[str, torch.Tensor]


def host_batch(arrays: dict[str, np.ndarray], pin: bool = False) -> HostBatch:
    """Numpy arrays as CPU tensors (shared memory, no copy), or copies in pinned memory when ``pin``."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    return {k: v.pin_memory() for k, v in tensors.items()} if pin else tensors


def prefetched(
    read: Callable[[np.ndarray], HostBatch], chunks: Sequence[np.ndarray], depth: int = 2
) -> Iterator[HostBatch]:
    """``read(rows)`` for each of ``chunks`` (row indices), in order, computed up to ``depth`` ahead on a
    background thread. Closing the iterator early waits for the reads in flight (at most ``depth``)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending: deque[Future[HostBatch]] = deque(pool.submit(read, rows) for rows in chunks[:depth])
        for i in range(len(chunks)):
            batch = pending.popleft().result()
            if i + depth < len(chunks):
                pending.append(pool.submit(read, chunks[i + depth]))
            yield batch
