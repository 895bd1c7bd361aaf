"""WING-MTL (seed 000): a shared MONAI Attention U-Net trunk with a small head per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import AttentionUnet
from torch import nn

from pipeline.models.base import MultiTaskModel
from pipeline.models.heads import ClassificationHead
from pipeline.tasks import Task


class _SegmentationHead(nn.Module):
    """1x1 convolution of the trunk output ``(B, C0, H, W)`` to logits ``(B, out_channels, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(features[-1])


class AttentionUNetMTL(MultiTaskModel):
    """MONAI ``AttentionUnet`` encoder *and* decoder shared by all tasks, without its output conv.

    Args:
        tasks: the tasks, any number and kinds; segmentation tasks get a 1x1 convolution,
            classification tasks global average pooling, dropout and a linear layer.
        in_channels: image channels ``C`` (1 or 3).
        dropout: dropout probability of the classification heads.
        channels: trunk channels, top level first (``C0 = channels[0]``).
        strides: downsampling per level; ``H`` and ``W`` must be multiples of their product.

    ``encode(x)``: ``(B, C, H, W)`` -> ``[(B, C0, H, W)]``, the last decoder feature, which every head
    reads. Classification pools this full-resolution feature rather than the bottleneck so that its
    gradient, like the segmentation tasks', reaches the shared trunk through
    :attr:`last_shared_layer` (the top level's merge convolution, whose output is the trunk's) —
    GradNorm measures every task there.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 1,
        dropout: float = 0.3,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2, 2),
    ):
        super().__init__()
        self.task_names = tuple(t.name for t in tasks)
        unet = AttentionUnet(
            spatial_dims=2, in_channels=in_channels, out_channels=1, channels=channels, strides=strides
        )
        self.trunk = unet.model[:2]
        self.heads = nn.ModuleDict(
            {
                t.name: _SegmentationHead(channels[0], t.out_channels)
                if t.is_segmentation
                else ClassificationHead(channels[0], t.out_channels, dropout)
                for t in tasks
            }
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.trunk(x)]

    def decode(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: head(features) for name, head in self.heads.items()}

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.trunk[1].merge

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        if task not in self.heads:
            raise ValueError(f"unknown task {task!r}; this model has {list(self.task_names)}")
        return list(self.heads[task].parameters())
