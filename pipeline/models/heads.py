"""Task heads shared by the backbones: each reads the trunk's feature list and owns its parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.tasks import Task


class ClassificationHead(nn.Module):
    """Global average pooling of the last feature map, dropout, then a linear layer.

    Args:
        in_channels: channels ``C`` of ``features[-1]``.
        num_classes: number of output logits.
        dropout: dropout probability applied to the pooled ``(B, C)`` vector.

    ``forward(features)`` reads ``features[-1]`` ``(B, C, h, w)`` and returns logits ``(B, num_classes)``.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(features[-1]).flatten(1)))


class SegmentationHead(nn.Module):
    """1x1 convolution of the last feature map ``(B, C, H, W)`` to logits ``(B, out_channels, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    @property
    def logit_layer(self) -> nn.Conv2d:
        return self.conv

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(features[-1])


def pointwise_heads(tasks: Sequence[Task], in_channels: int, dropout: float) -> nn.ModuleDict:
    """One head per task on a full-resolution trunk feature ``(B, in_channels, H, W)``, keyed by task name:
    a :class:`SegmentationHead` per segmentation task, a :class:`ClassificationHead` (with ``dropout``)
    per classification task."""
    return nn.ModuleDict(
        {
            t.name: SegmentationHead(in_channels, t.out_channels)
            if t.is_segmentation
            else ClassificationHead(in_channels, t.out_channels, dropout)
            for t in tasks
        }
    )
