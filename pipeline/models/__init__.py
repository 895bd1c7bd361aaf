"""Multi-task networks: :func:`build_model` picks one by ``model.name``.

A network is registered by being defined: every subclass of
:class:`~pipeline.models.base.MultiTaskModel` with a ``name`` in a module of this package is a ``model.name``
(see :func:`pipeline.plugins.discover`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import nn

from pipeline.config import Params
from pipeline.errors import ConfigError
from pipeline.models.attention_unet import AttentionUNetMTL
from pipeline.models.base import MultiTaskModel
from pipeline.models.separate import SeparateTaskModels
from pipeline.models.ssc_resnet import SSCResNet34, load_pretrained_encoder
from pipeline.models.swin_unetr import SwinUNETRMTL
from pipeline.models.unet import UNetMTL
from pipeline.plugins import discover
from pipeline.tasks import Task


@functools.cache
def model_classes() -> dict[str, type[MultiTaskModel]]:
    """Every registered network by name (the plug-ins of this package)."""
    return discover(__name__, MultiTaskModel)  # type: ignore[type-abstract]  # the base is abstract, found ones are not


def check_model(params: Params) -> type[MultiTaskModel]:
    """The network ``model.name`` names, after checking that ``params`` ask nothing of it that it cannot be;
    raises :class:`ConfigError` naming the key."""
    cls = model_classes().get(params.model.name)
    if cls is None:
        raise ConfigError(
            f"{params.source}: model.name = {params.model.name!r}: expected one of {sorted(model_classes())}"
        )
    cls.check_params(params)
    return cls


def build_model(params: Params, tasks: Sequence[Task], separate: bool = False) -> MultiTaskModel:
    """The network named by ``params.model.name`` with one head per task (pretrained encoder loaded); with
    ``separate``, one such network per task side by side (the STL baseline, :mod:`pipeline.models.separate`)."""
    cls = check_model(params)
    if separate:
        return SeparateTaskModels(tasks, lambda task: cls.from_params(params, (task,)))
    return cls.from_params(params, tasks)


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
    "check_model",
    "load_pretrained_encoder",
    "model_classes",
    "parameter_count",
]
