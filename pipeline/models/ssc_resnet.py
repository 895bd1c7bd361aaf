"""SSC-ResNet (seed 001): a ResNet-34 encoder shared by a U-Net decoder per segmentation task and
a pooled linear head per classification task."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, cast

import torch
from monai.networks.nets import ResNet
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from torch import nn

from pipeline.config import Params
from pipeline.errors import ConfigError, DataError
from pipeline.models.base import MultiTaskModel
from pipeline.models.heads import ClassificationHead
from pipeline.tasks import Task

STANDARD_WIDTH = 64


def encoder_channels(width: int) -> tuple[int, ...]:
    """Channels of the five encoder features for base ``width`` (64 gives ResNet-34's 64, 64, 128, 256, 512)."""
    return (width, width, 2 * width, 4 * width, 8 * width)


def decoder_channels(width: int) -> tuple[int, ...]:
    """Channels of the five decoder stages (64 gives 256, 128, 64, 32, 16)."""
    return (4 * width, 2 * width, width, width // 2, width // 4)


class UNetHead(nn.Module):
    """A segmentation task's own U-Net decoder over the five encoder features.

    Args:
        in_channels: image channels (MONAI's ``UNetDecoder`` lists them first; no skip uses them).
        out_channels: logits per pixel.
        width: the encoder's base width ``w``.

    ``forward(features)`` takes the encoder features ``(B, w, H/2, W/2)``, ``(B, w, H/4, W/4)``,
    ``(B, 2w, H/8, W/8)``, ``(B, 4w, H/16, W/16)``, ``(B, 8w, H/32, W/32)`` and returns logits
    ``(B, out_channels, H, W)``: four upsample-concatenate-conv stages with skips, a fifth without,
    then a 3x3 convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = STANDARD_WIDTH):
        super().__init__()
        self.decoder = UNetDecoder(
            spatial_dims=2,
            encoder_channels=(in_channels, *encoder_channels(width)),
            decoder_channels=decoder_channels(width),
            act=("relu", {"inplace": True}),
            norm="batch",
            dropout=0.0,
            bias=False,
            upsample="nontrainable",
            pre_conv="default",
            interp_mode="nearest",
            align_corners=None,
            is_pad=True,
        )
        self.out = SegmentationHead(
            spatial_dims=2, in_channels=decoder_channels(width)[-1], out_channels=out_channels, kernel_size=3
        )

    @property
    def logit_layer(self) -> nn.Conv2d:
        return cast(
            nn.Conv2d, self.out[0]
        )  # MONAI's SegmentationHead: the convolution, then identity upsampling and activation

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.out(self.decoder(features, skip_connect=len(features) - 1))


class SSCResNet34(MultiTaskModel):
    """ResNet-34 encoder (MONAI, torchvision layout) with one head per task.

    Args:
        tasks: the tasks, any number and kinds; segmentation tasks get a :class:`UNetHead`,
            classification tasks a :class:`~pipeline.models.heads.ClassificationHead` on the
            deepest feature.
        in_channels: image channels ``C`` (1 or 3).
        dropout: dropout probability of the classification heads.
        width: base width ``w`` of the encoder (64 = the standard ResNet-34, the only width that can
            load torchvision weights); every encoder and decoder width scales with it, the depth
            (3, 4, 6, 3 basic blocks) does not.

    ``encode(x)``: images ``(B, C, H, W)`` with ``H``, ``W`` multiples of 32 -> five features: the stem
    (7x7 stride-2 conv, BN, ReLU) ``(B, w, H/2, W/2)``, then ``layer1`` ... ``layer4`` at ``H/4`` ...
    ``H/32`` with w, 2w, 4w, 8w channels. :attr:`last_shared_layer` is the second convolution of
    ``layer4``'s last block, whose output is ``features[-1]``.
    """

    name = "ssc_resnet34"
    loads_pretrained_encoder = True
    fusion_layers: ClassVar[dict[str, tuple[str, ...]]] = {
        "bottleneck": ("encoder.layer4",),
        "every_scale": ("encoder.act", "encoder.layer1", "encoder.layer2", "encoder.layer3", "encoder.layer4"),
    }
    """The five features :meth:`encode` returns (the stem's activation, then ``layer1`` ... ``layer4``)."""

    @classmethod
    def from_params(cls, params: Params, tasks: Sequence[Task]) -> SSCResNet34:
        """With ``model.pretrained_encoder``, its weights loaded into the encoder."""
        model = cls(tasks, in_channels=params.data.channels, dropout=params.model.dropout, width=params.model.width)
        if params.model.pretrained_encoder is not None:
            load_pretrained_encoder(model, params.model.pretrained_encoder)
        return model

    def __init__(self, tasks: Sequence[Task], in_channels: int = 1, dropout: float = 0.3, width: int = STANDARD_WIDTH):
        super().__init__()
        channels = encoder_channels(width)
        self.task_names = tuple(t.name for t in tasks)
        self.encoder = ResNet(
            block="basic",
            layers=[3, 4, 6, 3],
            block_inplanes=list(channels[1:]),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            shortcut_type="B",
            feed_forward=False,
            bias_downsample=False,
        )
        self.heads = nn.ModuleDict(
            {
                t.name: UNetHead(in_channels, t.out_channels, width)
                if t.is_segmentation
                else ClassificationHead(channels[-1], t.out_channels, dropout)
                for t in tasks
            }
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        e = self.encoder
        x = e.act(e.bn1(e.conv1(x)))
        features = [x]
        x = e.maxpool(x)
        for layer in (e.layer1, e.layer2, e.layer3, e.layer4):
            x = layer(x)
            features.append(x)
        return features

    @property
    def last_shared_layer(self) -> nn.Module:
        return cast(nn.Module, self.encoder.layer4[-1].conv2)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())


def load_pretrained_encoder(model: SSCResNet34, source: str | Path) -> None:
    """Copy a torchvision-format ResNet-34 ``state_dict`` file into ``model.encoder``.

    The file maps torchvision names (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ...,
    ``layerN.0.downsample.{0,1}.*``) to tensors; MONAI's ResNet uses the same names. ``fc.*`` is
    ignored. A 3-channel ``conv1.weight`` ``(64, 3, 7, 7)`` is summed over its input channels for a
    1-channel encoder. ``source`` is a local path (``model.pretrained_encoder``).

    Raises:
        ConfigError: ``source`` is a URI or does not exist.
        DataError: the file is not a tensor ``state_dict``, lacks or adds ResNet-34 keys, or a tensor
            has the wrong shape; the message names the file and the keys.
    """
    if "://" in str(source):
        raise ConfigError(
            f"model.pretrained_encoder = {str(source)!r}: expected a local file path; fetch remote weights first"
        )
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"model.pretrained_encoder = {str(source)!r}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a torch state_dict file: {exc}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a mapping of parameter names to tensors (a state_dict)")

    own = model.encoder.state_dict()
    required = {k for k in own if not k.endswith("num_batches_tracked")}
    missing = sorted(required - state.keys())
    unexpected = sorted(k for k in state.keys() - own.keys() if not k.startswith("fc."))
    if missing or unexpected:
        raise DataError(
            f"{path}: not a torchvision ResNet-34 state_dict: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    loaded = {}
    for key in own.keys() & state.keys():
        tensor = state[key]
        if key == "conv1.weight" and tensor.ndim == 4 and tensor.shape[1] == 3 and own[key].shape[1] == 1:
            tensor = tensor.sum(dim=1, keepdim=True)
        if tensor.shape != own[key].shape:
            raise DataError(f"{path}: {key} has shape {tuple(tensor.shape)}, the encoder needs {tuple(own[key].shape)}")
        loaded[key] = tensor
    model.encoder.load_state_dict(loaded, strict=False)
