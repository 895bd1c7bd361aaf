"""A model over a set of arrays without gradients: per-task losses, batched prediction, losses and metrics.

Training validates with :func:`evaluate`, the evaluate stage and promotion score test images with it or with
:func:`predict_batches`, so every one of them runs the model the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from pipeline.data.folds import ArraySet
from pipeline.models.base import MultiTaskModel
from pipeline.runtime.comm import Comm, LocalComm
from pipeline.runtime.compute_format import ComputeFormat
from pipeline.runtime.device import to_tensors
from pipeline.runtime.metrics import TaskMetrics
from pipeline.tasks import Task


def task_losses(tasks: tuple[Task, ...], loss_fns: list[torch.nn.Module], outputs, batch) -> list[torch.Tensor]:
    """Unweighted per-task scalar losses for one chunk, in task order (kept apart: see Balancer.backward)."""
    return [fn(outputs[t.name], batch[t.target]) for t, fn in zip(tasks, loss_fns)]


def predict_batches(
    model: nn.Module,
    source: ArraySet,
    batch_size: int,
    device: torch.device,
    compute: ComputeFormat | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """Run ``model`` in eval mode, without gradients, over ``source`` in order, ``batch_size`` rows at a time.

    Yields ``(rows, batch, outputs)``: the row indices ``(B,)`` of ``source``, the batch as
    :func:`to_tensors` makes it and the model's float32 ``{task: logits}`` for it, computed in
    ``compute``'s precision and layout (float32, contiguous by default). ``shard = (i, n)`` yields only
    batches ``i, i + n, i + 2n, ...`` (the same batches whatever ``n``).
    """
    model.eval()
    index, count = shard
    for start in range(index * batch_size, len(source), count * batch_size):
        rows = np.arange(start, min(start + batch_size, len(source)))
        batch = to_tensors(source.read(rows), device)
        with torch.no_grad():
            if compute is None:
                outputs = model(batch["image"])
            else:
                with compute.autocast():
                    outputs = model(compute.prepare_images(batch["image"]))
        yield rows, batch, {name: out.float() for name, out in outputs.items()}


@torch.no_grad()
def evaluate(
    model: MultiTaskModel,
    tasks: tuple[Task, ...],
    source: ArraySet,
    batch_size: int,
    device: torch.device,
    loss_fns: list[torch.nn.Module] | None = None,
    compute: ComputeFormat | None = None,
    comm: Comm | None = None,
) -> tuple[torch.Tensor, dict[str, dict[str, float]]]:
    """Mean per-task losses ``(K,)`` (per-sample weighted) and metrics ``{task: {metric: value}}`` on ``source``,
    the model run in ``compute``'s precision and layout (see :func:`predict_batches`).

    With ``comm`` of several ranks each rank evaluates its shard of the batches; the ranks' loss sums and
    metric states are then gathered and merged in rank order on every rank, so every rank returns the
    same numbers.
    """
    comm = comm or LocalComm()
    loss_fns = loss_fns or [t.loss_fn() for t in tasks]
    metrics = [TaskMetrics(t) for t in tasks]
    loss_sum = torch.zeros(len(tasks), device=device)
    shard = (comm.rank, comm.world_size)
    for rows, batch, outputs in predict_batches(model, source, batch_size, device, compute, shard):
        loss_sum += torch.stack(task_losses(tasks, loss_fns, outputs, batch)) * len(rows)
        for t, m in zip(tasks, metrics):
            m.update(outputs[t.name], batch[t.target])
    if comm.world_size > 1:
        parts = comm.gather_objects((loss_sum.cpu(), [m.state() for m in metrics]))
        loss_sum = torch.stack([losses for losses, _ in parts]).sum(dim=0)
        metrics = [TaskMetrics.merged(t, [states[k] for _, states in parts]) for k, t in enumerate(tasks)]
    return (loss_sum / len(source)).cpu(), {t.name: m.compute() for t, m in zip(tasks, metrics)}
