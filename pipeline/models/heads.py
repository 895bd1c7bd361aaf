"""Task heads shared by the backbones: each reads the trunk's feature list and owns its parameters."""

from __future__ import annotations

import torch
from torch import nn


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
