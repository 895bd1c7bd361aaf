"""Multi-task networks: :func:`build_model` picks one by ``model.name``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from pipeline.config import Params
from pipeline.errors import ConfigError
from pipeline.models.attention_unet import AttentionUNetMTL
from pipeline.models.base import MultiTaskModel
from pipeline.models.separate import SeparateTaskModels
from pipeline.models.ssc_resnet import SSCResNet34, load_pretrained_encoder
from pipeline.models.swin_unetr import MIN_IMAGE_SIZE, SwinUNETRMTL, feature_size_for_width
from pipeline.models.unet import UNetMTL
from pipeline.tasks import Task


def _ssc_resnet34(params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
    model = SSCResNet34(tasks, in_channels=params.data.channels, dropout=params.model.dropout, width=params.model.width)
    if params.model.pretrained_encoder is not None:
        load_pretrained_encoder(model, params.model.pretrained_encoder)
    return model


def _refuse_pretrained_encoder(params: Params) -> None:
    if params.model.pretrained_encoder is not None:
        raise ConfigError("model.pretrained_encoder: only ssc_resnet34 loads a pretrained encoder; set it to null")


def _attention_unet(params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
    _refuse_pretrained_encoder(params)
    return AttentionUNetMTL(tasks, in_channels=params.data.channels, dropout=params.model.dropout)


def _unet(params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
    _refuse_pretrained_encoder(params)
    return UNetMTL(tasks, in_channels=params.data.channels, dropout=params.model.dropout, width=params.model.width)


def _swin_unetr(params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
    _refuse_pretrained_encoder(params)
    if params.data.image_size < MIN_IMAGE_SIZE:
        raise ConfigError(
            f"data.image_size = {params.data.image_size}: swin_unetr needs at least {MIN_IMAGE_SIZE} "
            "(its 1/32-scale bottleneck must have more than one pixel)"
        )
    return SwinUNETRMTL(
        tasks,
        in_channels=params.data.channels,
        dropout=params.model.dropout,
        feature_size=feature_size_for_width(params.model.width),
    )


MODEL_BUILDERS: dict[str, Callable[[Params, Sequence[Task]], MultiTaskModel]] = {
    "ssc_resnet34": _ssc_resnet34,
    "attention_unet": _attention_unet,
    "unet": _unet,
    "swin_unetr": _swin_unetr,
}


def build_model(params: Params, tasks: Sequence[Task], separate: bool = False) -> MultiTaskModel:
    """The network named by ``params.model.name`` with one head per task (pretrained encoder loaded); with
    ``separate``, one such network per task side by side (the STL baseline, :mod:`pipeline.models.separate`)."""
    builder = MODEL_BUILDERS.get(params.model.name)
    if builder is None:
        raise ConfigError(f"model.name = {params.model.name!r}: expected one of {sorted(MODEL_BUILDERS)}")
    if separate:
        return SeparateTaskModels(tasks, lambda task: builder(params, (task,)))
    return builder(params, tasks)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters (scalars) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "AttentionUNetMTL",
    "MultiTaskModel",
    "SSCResNet34",
    "SeparateTaskModels",
    "SwinUNETRMTL",
    "UNetMTL",
    "build_model",
    "load_pretrained_encoder",
    "parameter_count",
]
