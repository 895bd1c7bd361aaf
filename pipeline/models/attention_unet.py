"""WING-MTL (seed 000): a shared MONAI Attention U-Net trunk with a small head per task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, cast

from monai.networks.nets import AttentionUnet
from torch import nn

from pipeline.config import Params
from pipeline.models.shared_trunk import SharedTrunkMTL
from pipeline.tasks import Task


class AttentionUNetMTL(SharedTrunkMTL):
    """MONAI ``AttentionUnet`` encoder *and* decoder shared by all tasks, without its output conv.

    Args:
        tasks: the tasks, any number and kinds, a head each (see :class:`SharedTrunkMTL`).
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

    name = "attention_unet"
    fusion_layers: ClassVar[dict[str, tuple[str, ...]]] = {
        "bottleneck": ("trunk.1.submodule.1.submodule.1.submodule.1.submodule",),
        "every_scale": (
            "trunk.0",
            "trunk.1.submodule.0",
            "trunk.1.submodule.1.submodule.0",
            "trunk.1.submodule.1.submodule.1.submodule.0",
            "trunk.1.submodule.1.submodule.1.submodule.1.submodule",
        ),
    }
    """The encoder's convolution block of each level, the bottleneck the deepest (MONAI nests a level's block
    and the next level inside an ``AttentionLayer``); valid for the default five levels."""

    @classmethod
    def from_params(cls, params: Params, tasks: Sequence[Task]) -> AttentionUNetMTL:
        return cls(tasks, in_channels=params.data.channels, dropout=params.model.dropout)

    def __init__(
        self,
        tasks: Sequence[Task],
        in_channels: int = 1,
        dropout: float = 0.3,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2, 2),
    ):
        unet = AttentionUnet(
            spatial_dims=2, in_channels=in_channels, out_channels=1, channels=channels, strides=strides
        )
        super().__init__(tasks, unet.model[:2], channels[0], dropout)

    @property
    def last_shared_layer(self) -> nn.Module:
        return cast(nn.Module, self.trunk[1].merge)  # type: ignore[index]  # trunk is MONAI's nn.Sequential
