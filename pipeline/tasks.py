"""Tasks as data: a name, a kind, the target array it learns, its head size and its loss.

Nothing downstream branches on task names; code that needs per-kind behaviour asks ``task.kind``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn

from pipeline.config import Params, TaskParams
from pipeline.errors import DataError


@dataclass(frozen=True)
class Task:
    """One prediction head.

    ``out_channels`` is the head's output size: 1 for binary segmentation (a logit per pixel),
    ``num_classes`` for multi-class segmentation (logits per pixel) and classification (logits).
    """

    name: str
    kind: str
    target: str
    out_channels: int
    class_names: tuple[str, ...] = ()

    @property
    def is_segmentation(self) -> bool:
        return self.kind != "classification"

    def check_targets(self, values: np.ndarray, where: str) -> None:
        """Raise DataError if target ``values`` (any shape, integer) do not fit this task's kind.

        binary_segmentation: masks in {0, 1}; multiclass_segmentation (tissue index masks) and
        classification: class indices in ``0 .. out_channels - 1``.
        """
        allowed = 2 if self.kind == "binary_segmentation" else self.out_channels
        present = np.unique(values)
        bad = present[(present < 0) | (present >= allowed)]
        if bad.size:
            raise DataError(
                f"{where}: task {self.name!r} ({self.kind}) needs {self.target} values in 0..{allowed - 1}, "
                f"found {bad[:10].tolist()}"
            )

    def loss_fn(self) -> nn.Module:
        """Unweighted loss ``(prediction, target) -> scalar``.

        binary_segmentation: Dice + BCE on logits ``(B, 1, H, W)`` vs mask ``(B, H, W)`` in {0, 1};
        multiclass_segmentation: Dice + CE on logits ``(B, C, H, W)`` vs index mask ``(B, H, W)``;
        classification: cross-entropy on logits ``(B, C)`` vs class index ``(B,)``.
        """
        if self.kind == "classification":
            return nn.CrossEntropyLoss()
        if self.kind == "binary_segmentation":
            return _SegLoss(DiceCELoss(sigmoid=True, batch=True), as_float=True)
        return _SegLoss(DiceCELoss(softmax=True, to_onehot_y=True, batch=True), as_float=False)


class _SegLoss(nn.Module):
    """Adapt an index/binary mask ``(B, H, W)`` to MONAI's ``(B, 1, H, W)`` target layout."""

    def __init__(self, loss: nn.Module, as_float: bool):
        super().__init__()
        self.loss = loss
        self.as_float = as_float

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = mask.unsqueeze(1)
        return self.loss(logits, target.float() if self.as_float else target.long())


def build_tasks(params: Params) -> tuple[Task, ...]:
    """The configured tasks: classification heads get one output per class of ``data.classes``, tissue
    segmentation one per tissue of ``data.tissues`` after the background (class 0)."""
    return tuple(_build(t, params) for t in params.tasks)


def _build(t: TaskParams, params: Params) -> Task:
    if t.kind == "classification":
        classes = params.data.classes
        return Task(t.name, t.kind, t.target, len(classes), tuple(classes))
    if t.kind == "binary_segmentation":
        return Task(t.name, t.kind, t.target, 1, ("background", "foreground"))
    names = ("background", *(tissue.name for tissue in params.data.tissues))
    return Task(t.name, t.kind, t.target, len(names), names)
