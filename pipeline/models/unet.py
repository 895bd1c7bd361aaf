"""A plain U-Net: MONAI's ``BasicUNet`` encoder and decoder shared by all tasks, a small head per task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from monai.networks.nets import BasicUNet
from torch import nn

from pipeline.config import Params
from pipeline.models.shared_trunk import SharedTrunkMTL
from pipeline.tasks import Task


def unet_features(width: int) -> tuple[int, ...]:
    """``BasicUNet`` channels for base ``width`` ``w``: the five encoder levels ``w, 2w, 4w, 8w, 16w``
    (64 gives the original U-Net's 64 ... 1024) and the top decoder level ``w``."""
    return (width, 2 * width, 4 * width, 8 * width, 16 * width, width)


class UNetMTL(SharedTrunkMTL):
    """MONAI ``BasicUNet`` (2-D, instance norm, LeakyReLU, transposed-conv upsampling) without its output conv.

    Args:
        tasks: the tasks, any number and kinds, a head each (see :class:`SharedTrunkMTL`).
        in_channels: image channels ``C`` (1 or 3).
        dropout: dropout probability of the classification heads.
        width: channels ``w`` of the top level (``model.width``); the levels below have
            ``2w, 4w, 8w, 16w`` (see :func:`unet_features`).

    ``encode(x)``: ``(B, C, H, W)`` with ``H``, ``W`` multiples of 16 (four 2x poolings) ->
    ``[(B, w, H, W)]``, the top decoder level's output, which every head reads.
    :attr:`last_shared_layer` is that level's second 3x3 convolution block (conv, norm, activation),
    whose output is ``features[-1]``.
    """

    name = "unet"
    fusion_layers: ClassVar[dict[str, tuple[str, ...]]] = {
        "bottleneck": ("trunk.down_4",),
        "every_scale": ("trunk.conv_0", "trunk.down_1", "trunk.down_2", "trunk.down_3", "trunk.down_4"),
    }

    @classmethod
    def from_params(cls, params: Params, tasks: Sequence[Task]) -> UNetMTL:
        return cls(tasks, in_channels=params.data.channels, dropout=params.model.dropout, width=params.model.width)

    def __init__(self, tasks: Sequence[Task], in_channels: int = 1, dropout: float = 0.3, width: int = 16):
        unet = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=1, features=unet_features(width))
        unet.final_conv = nn.Identity()
        super().__init__(tasks, unet, width, dropout)

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.trunk.get_submodule("upcat_1.convs.conv_1")
