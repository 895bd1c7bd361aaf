"""A Transformer backbone: MONAI's 2-D ``SwinUNETR`` shared by all tasks, a small head per task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from monai.networks.nets import SwinUNETR
from torch import nn

from pipeline.config import Params
from pipeline.errors import ConfigError
from pipeline.models.shared_trunk import SharedTrunkMTL
from pipeline.tasks import Task

MIN_IMAGE_SIZE = 64


def feature_size_for_width(width: int) -> int:
    """``SwinUNETR``'s ``feature_size`` for ``model.width``: ``3/4`` of it rounded to a multiple of 12
    (SwinUNETR's requirement), at least 12: width 16 -> 12, 32 -> 24, 64 -> 48 (MONAI's standard size)."""
    return 12 * max(1, (width + 8) // 16)


class SwinUNETRMTL(SharedTrunkMTL):
    """MONAI ``SwinUNETR`` (``spatial_dims=2``): Swin Transformer encoder, convolutional U-Net decoder,
    without its output conv.

    Args:
        tasks: the tasks, any number and kinds, a head each (see :class:`SharedTrunkMTL`).
        in_channels: image channels ``C`` (1 or 3).
        dropout: dropout probability of the classification heads.
        feature_size: ``F``, a multiple of 12: the patch embedding has ``F`` channels and the four
            Swin stages (depths 2, 2, 2, 2; 3, 6, 12, 24 heads; window 7) ``2F, 4F, 8F, 16F``.

    ``encode(x)``: ``(B, C, H, W)`` with ``H``, ``W`` multiples of 32 and at least
    :data:`MIN_IMAGE_SIZE` (the bottleneck at ``H/32`` is instance-normalised, which needs more
    than one pixel) -> ``[(B, F, H, W)]``, the top decoder block's output, which every head reads.
    :attr:`last_shared_layer` is that block's residual unit (two 3x3 convolutions and the 1x1
    projection of its shortcut, both branches summed into ``features[-1]``).
    """

    name = "swin_unetr"
    fusion_layers: ClassVar[dict[str, tuple[str, ...]]] = {
        "bottleneck": ("trunk.encoder10",),
        "every_scale": ("trunk.encoder1", "trunk.encoder2", "trunk.encoder3", "trunk.encoder4", "trunk.encoder10"),
    }
    """The convolution blocks that turn the image and the Swin stages' outputs into the decoder's skips."""

    @classmethod
    def check_params(cls, params: Params) -> None:
        super().check_params(params)
        if params.data.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(
                f"{params.source}: data.image_size = {params.data.image_size}: swin_unetr needs at least {MIN_IMAGE_SIZE} "
                "(its 1/32-scale bottleneck must have more than one pixel)"
            )

    @classmethod
    def from_params(cls, params: Params, tasks: Sequence[Task]) -> SwinUNETRMTL:
        return cls(
            tasks,
            in_channels=params.data.channels,
            dropout=params.model.dropout,
            feature_size=feature_size_for_width(params.model.width),
        )

    def __init__(self, tasks: Sequence[Task], in_channels: int = 1, dropout: float = 0.3, feature_size: int = 12):
        swin = SwinUNETR(in_channels=in_channels, out_channels=1, feature_size=feature_size, spatial_dims=2)
        swin.out = nn.Identity()  # type: ignore[assignment]  # the heads replace MONAI's output block
        super().__init__(tasks, swin, feature_size, dropout)

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.trunk.get_submodule("decoder1.conv_block")
