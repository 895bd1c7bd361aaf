"""Multi-task networks: :func:`build_model` picks one by ``model.name``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.config import Params
from pipeline.errors import ConfigError
from pipeline.models.attention_unet import AttentionUNetMTL
from pipeline.models.base import MultiTaskModel
from pipeline.models.ssc_resnet import SSCResNet34, load_pretrained_encoder
from pipeline.tasks import Task


def _ssc_resnet34(params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
    model = SSCResNet34(
        tasks, in_channels=params.data.channels, dropout=params.model.dropout, width=params.model.width
    )
    if params.model.pretrained_encoder is not None:
        load_pretrained_encoder(model, params.model.pretrained_encoder)
    return model


def _attention_unet(params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
    if params.model.pretrained_encoder is not None:
        raise ConfigError(
            "model.pretrained_encoder: only ssc_resnet34 loads a pretrained encoder; set it to null"
        )
    return AttentionUNetMTL(tasks, in_channels=params.data.channels, dropout=params.model.dropout)


MODEL_BUILDERS: dict[str, Callable[[Params, Sequence[Task]], MultiTaskModel]] = {
    "ssc_resnet34": _ssc_resnet34,
    "attention_unet": _attention_unet,
}


def build_model(params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
    """The network named by ``params.model.name`` with one head per task (pretrained encoder loaded)."""
    builder = MODEL_BUILDERS.get(params.model.name)
    if builder is None:
        raise ConfigError(f"model.name = {params.model.name!r}: expected one of {sorted(MODEL_BUILDERS)}")
    return builder(params, tasks)


__all__ = ["AttentionUNetMTL", "MultiTaskModel", "SSCResNet34", "build_model", "load_pretrained_encoder"]
