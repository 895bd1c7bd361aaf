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

    @property
    def target_classes(self) -> int:
        """How many values a target takes: 2 for a binary mask, ``out_channels`` otherwise."""
        return 2 if self.kind == "binary_segmentation" else self.out_channels

    def check_targets(self, values: np.ndarray, where: str) -> None:
        """Raise DataError if target ``values`` (any shape, integer) do not fit this task's kind.

        binary_segmentation: masks in {0, 1}; multiclass_segmentation (tissue index masks) and
        classification: class indices in ``0 .. out_channels - 1``.
        """
        present = np.unique(values)
        bad = present[(present < 0) | (present >= self.target_classes)]
        if bad.size:
            raise DataError(
                f"{where}: task {self.name!r} ({self.kind}) needs {self.target} values in "
                f"0..{self.target_classes - 1}, found {bad[:10].tolist()}"
            )

    def prior_logits(self, counts: np.ndarray) -> torch.Tensor:
        """Logits ``(out_channels,)`` float32 whose prediction is the class frequencies of ``counts``
        ``(target_classes,)``: ``log(p / (1 - p))`` of the foreground for a binary mask (the sigmoid gives
        ``p``), ``log p_c`` per class otherwise (the softmax gives ``p``). Frequencies are clipped to
        ``[1e-4, 1 - 1e-4]`` so an absent class gets a finite logit."""
        p = np.clip(np.asarray(counts, np.float64) / max(int(np.sum(counts)), 1), 1e-4, 1 - 1e-4)
        logits = np.log(p[1:] / (1 - p[1:])) if self.kind == "binary_segmentation" else np.log(p)
        return torch.as_tensor(logits, dtype=torch.float32)

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
