"""Averaging gradients over ranks while the backward pass runs: bucketed asynchronous all-reduces.

What DDP's reducer does, without DDP's module wrapper (GradNorm runs partial backward passes and writes
its heads' gradients itself, which DDP's autograd hooks do not allow, pytorch/pytorch#47260):

* the parameters are cut into buckets of about ``bucket_mib`` MiB, in reverse registration order (about
  the order the backward pass produces their gradients), each with a persistent flat buffer;
* during the backward pass of a step's last micro-batch (:meth:`GradientReducer.arm`), a
  post-accumulate-grad hook marks a parameter ready; a bucket whose parameters are all ready is copied
  into its buffer and its all-reduce started, so communication overlaps the rest of the backward pass.
  Buckets start in index order on every rank (collectives must be issued in the same order);
* :meth:`GradientReducer.finish` starts the buckets the backward pass did not complete (gradients written
  directly, parameters without a gradient this step), waits for every bucket, and writes the mean over
  ranks back into ``.grad``. A parameter without a gradient keeps none (Adam skips it, as before).

Gradients are summed in the parameters' own dtype; the mean is the sum divided by the world size, as
:meth:`pipeline.runtime.comm.Comm.all_reduce_mean` computes it, so N workers and one worker accumulating N
chunks compute the same update (bitwise on the CPU with gloo for two ranks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.runtime.comm import Comm

DEFAULT_BUCKET_MIB = 25.0
"""DDP's default bucket size."""


@dataclass
class _Bucket:
    params: list[torch.nn.Parameter]
    buffer: torch.Tensor
    offsets: list[int]
    ready: set[int] = field(default_factory=set)
    work: Any = None  # the started all-reduce (has .wait()), None until started


class GradientReducer:
    """Averages the ``.grad`` of ``parameters`` over ``comm``'s ranks, overlapped with the last backward pass.

    Usage per optimiser step: ``arm()`` before the last micro-batch's backward pass, ``finish()`` after it.
    ``written_directly``: parameters whose ``.grad`` is assigned rather than accumulated by autograd (no
    hook fires for them); they get buckets of their own after the others, started by ``finish()``.
    """

    def __init__(
        self,
        parameters: Sequence[torch.nn.Parameter],
        comm: Comm,
        written_directly: Sequence[torch.nn.Parameter] = (),
        bucket_mib: float = DEFAULT_BUCKET_MIB,
    ):
        self.comm = comm
        direct = {id(p) for p in written_directly}
        trainable = [p for p in parameters if p.requires_grad]
        size = bucket_mib * 2**20
        self.buckets = _buckets([p for p in trainable[::-1] if id(p) not in direct], size) + _buckets(
            [p for p in trainable if id(p) in direct], size
        )
        self._where = {id(p): (b, i) for b, bucket in enumerate(self.buckets) for i, p in enumerate(bucket.params)}
        self._armed = False
        self._next = 0  # index of the next bucket to start
        self._handles = [
            p.register_post_accumulate_grad_hook(self._on_grad) for bucket in self.buckets for p in bucket.params
        ]

    def arm(self) -> None:
        """The next backward pass completes the step's gradients: start all-reduces as buckets fill."""
        self._armed = True

    def finish(self) -> None:
        """Start the remaining buckets, wait for all, and write the averaged gradients into ``.grad``."""
        self._armed = False
        for bucket in self.buckets[self._next :]:
            bucket.ready = set(range(len(bucket.params)))
        self._start_ready()
        for bucket in self.buckets:
            bucket.work.wait()
            bucket.buffer.div_(self.comm.world_size)
            for p, offset in zip(bucket.params, bucket.offsets):
                if p.grad is not None:
                    p.grad.copy_(bucket.buffer[offset : offset + p.numel()].view_as(p.grad))
            bucket.ready.clear()
            bucket.work = None
        self._next = 0

    def close(self) -> None:
        """Remove the hooks from the parameters."""
        for handle in self._handles:
            handle.remove()

    def _on_grad(self, param: torch.nn.Parameter) -> None:
        if not self._armed:
            return
        b, i = self._where[id(param)]
        if b < self._next:
            raise RuntimeError(
                "a gradient was accumulated after its bucket's all-reduce started: a parameter took part in two "
                "backward passes of the last micro-batch; GradientReducer needs one"
            )
        self.buckets[b].ready.add(i)
        self._start_ready()

    def _start_ready(self) -> None:
        """Start, in index order, every bucket from the next one on whose parameters are all ready."""
        while self._next < len(self.buckets) and len(self.buckets[self._next].ready) == len(
            self.buckets[self._next].params
        ):
            bucket = self.buckets[self._next]
            for p, offset in zip(bucket.params, bucket.offsets):
                view = bucket.buffer[offset : offset + p.numel()]
                if p.grad is None:
                    view.zero_()
                else:
                    view.copy_(p.grad.reshape(-1))
            bucket.work = self.comm.start_all_reduce_sum(bucket.buffer)
            self._next += 1


def _buckets(params: list[torch.nn.Parameter], bucket_bytes: float) -> list[_Bucket]:
    """Consecutive parameters of one dtype and device, cut into buckets of at least ``bucket_bytes``
    (the last of a kind may be smaller), each with a zeroed flat buffer."""
    groups: list[list[torch.nn.Parameter]] = []
    size = 0.0
    for p in params:
        same_kind = groups and (groups[-1][-1].dtype, groups[-1][-1].device) == (p.dtype, p.device)
        if not same_kind or size >= bucket_bytes:
            groups.append([])
            size = 0.0
        groups[-1].append(p)
        size += p.numel() * p.element_size()
    buckets = []
    for group in groups:
        offsets = [0]
        for p in group[:-1]:
            offsets.append(offsets[-1] + p.numel())
        total = offsets[-1] + group[-1].numel()
        buckets.append(_Bucket(group, group[0].new_zeros(total), offsets))
    return buckets
