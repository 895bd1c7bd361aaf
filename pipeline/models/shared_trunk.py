"""Backbones whose whole network is shared: a trunk to one full-resolution feature, a small head per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.models.base import MultiTaskModel
from pipeline.models.heads import pointwise_heads
from pipeline.tasks import Task


class SharedTrunkMTL(MultiTaskModel):
    """A shared ``trunk`` (encoder and decoder) with :func:`~pipeline.models.heads.pointwise_heads` on its output.

    Args:
        tasks: the tasks, any number and kinds; segmentation tasks get a 1x1 convolution,
            classification tasks global average pooling, dropout and a linear layer.
        trunk: maps images ``(B, C, H, W)`` to one feature ``(B, C0, H, W)``.
        trunk_channels: ``C0``.
        dropout: dropout probability of the classification heads.

    ``encode(x)``: ``(B, C, H, W)`` -> ``[(B, C0, H, W)]``, the trunk's output, which every head reads.
    Classification pools this full-resolution feature rather than a bottleneck so that its gradient,
    like the segmentation tasks', reaches the trunk through :attr:`last_shared_layer` — GradNorm
    measures every task there. Subclasses name that layer: the trunk's last block, whose output is
    the trunk's.
    """

    def __init__(self, tasks: Sequence[Task], trunk: nn.Module, trunk_channels: int, dropout: float):
        super().__init__()
        self.task_names = tuple(t.name for t in tasks)
        self.trunk = trunk
        self.heads = pointwise_heads(tasks, trunk_channels, dropout)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.trunk(x)]

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())
