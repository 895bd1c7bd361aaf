"""The interface every multi-task network implements: one shared trunk, one head per task."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, cast

import torch
from torch import nn

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import Params
    from pipeline.tasks import Task


class MultiTaskModel(nn.Module, ABC):
    """Shared trunk ``encode`` followed by per-task heads ``decode``.

    ``encode(x)`` takes images ``(B, C, H, W)`` (float, roughly zero-mean) and returns the list of
    shared feature maps the heads read (e.g. a U-Net's skip features, shallow to deep). The last
    element is the output of :attr:`last_shared_layer`'s block, so the gradient of a task loss
    with respect to that layer's parameters depends on the heads only through ``features[-1]``.

    ``decode(features)`` returns ``{task name: logits}``; segmentation logits are ``(B, C_k, H, W)``,
    classification logits ``(B, C_k)``. Heads of different tasks share no parameters.

    A subclass that sets ``name`` is a plug-in: defining it in a module of :mod:`pipeline.models` makes it a
    ``model.name`` (:func:`pipeline.models.build_model`), built by :meth:`from_params`.
    """

    name: ClassVar[str]
    loads_pretrained_encoder: ClassVar[bool] = False
    """Whether ``model.pretrained_encoder`` means something to this network."""

    fusion_layers: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Where MT-CooL can fuse one task's network with the others' (:mod:`pipeline.models.cooperative`): per level
    (``bottleneck``, ``every_scale``), the paths of the modules whose outputs are fused, shallow to deep. Each is an
    encoder layer, whose output depends on no fused feature before it except its own level's inputs."""

    task_names: tuple[str, ...]
    heads: nn.ModuleDict
    """One head per task, by task name: ``head(features)`` → that task's logits."""

    @classmethod
    def check_params(cls, params: Params) -> None:
        """Raise :class:`ConfigError` naming the key when ``params`` ask for what this network cannot be."""
        if params.model.pretrained_encoder is not None and not cls.loads_pretrained_encoder:
            raise ConfigError(
                f"{params.source}: model.pretrained_encoder: {cls.name} loads no pretrained encoder; set it to null"
            )

    @classmethod
    def from_params(cls, params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
        """The network for ``tasks`` configured by ``params.model`` and ``params.data.channels`` (checked by
        :meth:`check_params` first)."""
        raise NotImplementedError(f"{cls.__qualname__} sets a name but does not say how it is built")

    @abstractmethod
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]: ...

    def decode(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: head(features) for name, head in self.heads.items()}

    @property
    @abstractmethod
    def last_shared_layer(self) -> nn.Module:
        """The layer W at which GradNorm measures per-task gradient norms."""

    @abstractmethod
    def shared_parameters(self) -> list[nn.Parameter]: ...

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        if task not in self.heads:
            raise ValueError(f"unknown task {task!r}; this model has {list(self.task_names)}")
        return list(self.heads[task].parameters())

    def logit_layer(self, task: str) -> nn.Conv2d:
        """The convolution that gives segmentation task ``task``'s logits (its bias is the logits' offset)."""
        if task not in self.heads:
            raise ValueError(f"unknown task {task!r}; this model has {list(self.task_names)}")
        return cast(nn.Conv2d, self.heads[task].logit_layer)

    @torch.no_grad()
    def start_at_priors(self, priors: dict[str, torch.Tensor]) -> None:
        """Set each named segmentation task's logit bias to ``priors[task]`` ``(C_k,)``, so that before training
        the task predicts those logits wherever its features are zero (see :meth:`pipeline.tasks.Task.prior_logits`)."""
        for task, logits in priors.items():
            bias = self.logit_layer(task).bias
            if bias is None:
                raise ValueError(f"task {task!r}: its logit convolution has no bias to start at the priors")
            bias.copy_(logits.to(bias.device, bias.dtype))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(x))
