"""One trained model over a data set: set metrics, per-image values and the predictions of a few rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.balancers import balancer_class
from pipeline.config import Params
from pipeline.data.folds import ArraySet
from pipeline.errors import DataError
from pipeline.models.base import MultiTaskModel
from pipeline.runtime.inference import predict_batches
from pipeline.runtime.metrics import TaskMetrics
from pipeline.tasks import Task
from pipeline.train.checkpoint import load_checkpoint


@dataclass(frozen=True)
class ModelPass:
    """What one model predicted on every row of a set, in row order.

    ``metrics``: ``{task: {metric: value}}`` of :meth:`TaskMetrics.compute` over the whole set.
    ``per_image``: per task, segmentation ``{"dice": (N,), "iou": (N,)}`` (each image's own score);
    classification ``{"label": (N,) int, "correct": (N,) bool, "probability": (N, C) float32}``
    (softmax of the logits; the prediction is its arg-max).
    ``kept``: per binary segmentation task, the lesion probability (sigmoid) ``(n, H, W)`` float32
    of the rows asked for with ``keep``, in ascending row order.
    """

    metrics: dict[str, dict[str, float]]
    per_image: dict[str, dict[str, np.ndarray]]
    kept: dict[str, np.ndarray]


def load_model(
    params: Params, tasks: tuple[Task, ...], path: Path, device: torch.device, balancer: str = "equal"
) -> MultiTaskModel:
    """The network ``balancer`` trains under ``params`` with the weights of checkpoint ``path`` (its ``"model"``
    state dict)."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    if checkpoint is None:
        raise DataError(f"{path}: checkpoint not found (run the train stage for this balancer and fold)")
    model = balancer_class(balancer).build_network(params, tasks)
    try:
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as exc:
        raise DataError(f"{path}: weights do not fit model {params.model.name!r} with these tasks ({exc})") from None
    return model.to(device)


def model_pass(
    model: nn.Module,
    tasks: tuple[Task, ...],
    source: ArraySet,
    batch_size: int,
    device: torch.device,
    keep: np.ndarray,
) -> ModelPass:
    """Run ``model`` over ``source`` once; ``keep`` ``(n,)`` are row indices whose lesion maps to keep."""
    metrics = {t.name: TaskMetrics(t) for t in tasks}
    classified = [t for t in tasks if t.kind == "classification"]
    masked = [t for t in tasks if t.kind == "binary_segmentation"]
    labels: dict[str, list[torch.Tensor]] = {t.name: [] for t in classified}
    probabilities: dict[str, list[torch.Tensor]] = {t.name: [] for t in classified}
    kept: dict[str, list[torch.Tensor]] = {t.name: [] for t in masked}
    for rows, batch, outputs in predict_batches(model, source, batch_size, device):
        for t in tasks:
            metrics[t.name].update(outputs[t.name], batch[t.target])
        for t in classified:
            labels[t.name].append(batch[t.target].cpu())
            probabilities[t.name].append(outputs[t.name].float().softmax(dim=1).cpu())
        wanted = torch.from_numpy(np.isin(rows, keep)).to(device)
        for t in masked:
            kept[t.name].append(outputs[t.name][wanted, 0].float().sigmoid().cpu())
    per_image = {name: m.per_sample() for name, m in metrics.items()}
    for t in classified:
        per_image[t.name] |= {
            "label": torch.cat(labels[t.name]).numpy(),
            "probability": torch.cat(probabilities[t.name]).numpy(),
        }
    return ModelPass(
        metrics={name: m.compute() for name, m in metrics.items()},
        per_image=per_image,
        kept={name: torch.cat(maps).numpy() for name, maps in kept.items()},
    )
