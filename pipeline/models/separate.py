"""Separate-task learning (STL), the baseline multi-task learning is measured against: one whole network per task.

:class:`SeparateTaskModels` puts K single-task networks (each the configured backbone with one head) side by
side behind the :class:`~pipeline.models.base.MultiTaskModel` interface, so the training loop, evaluation and
registry treat it like any other model. They share no parameter, so training the sum of the task losses
(the ``stl`` balancer: weights 1) gives each network exactly the gradient of its own loss, and Adam, being
per-parameter, updates each as if it were trained alone — on the same batches, for the same epochs: the same
budget as the multi-task models. What the networks still share is the schedule: early stopping and the
learning-rate plateau follow the summed validation loss. The parameter count is K times a backbone's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from pipeline.models.base import MultiTaskModel
from pipeline.tasks import Task


class SeparateTaskModels(MultiTaskModel):
    """One ``build(task)`` network per task, in task order.

    ``encode(x)`` ``(B, C, H, W)`` returns the feature lists of every network, concatenated in task order;
    ``decode`` splits them back and returns each task's logits from its own network.
    """

    def __init__(self, tasks: Sequence[Task], build: Callable[[Task], MultiTaskModel]):
        super().__init__()
        self.task_names = tuple(t.name for t in tasks)
        self.networks = nn.ModuleDict({t.name: build(t) for t in tasks})
        self.heads = nn.ModuleDict()  # each network owns its head
        self._feature_counts: dict[str, int] = {}

    def _each(self) -> list[tuple[str, MultiTaskModel]]:
        """The networks by task name (an ``nn.ModuleDict`` holds them as plain modules)."""
        return [(name, cast(MultiTaskModel, network)) for name, network in self.networks.items()]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        for name, network in self._each():
            own = network.encode(x)
            self._feature_counts[name] = len(own)
            features.extend(own)
        return features

    def decode(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs, start = {}, 0
        for name, network in self._each():
            count = self._feature_counts[name]
            outputs.update(network.decode(features[start : start + count]))
            start += count
        return outputs

    @property
    def last_shared_layer(self) -> nn.Module:
        raise TypeError("separate-task networks share no layer (GradNorm needs a multi-task model)")

    def shared_parameters(self) -> list[nn.Parameter]:
        return []

    def logit_layer(self, task: str) -> nn.Conv2d:
        if task not in self.networks:
            raise ValueError(f"unknown task {task!r}; this model has {list(self.task_names)}")
        return cast(MultiTaskModel, self.networks[task]).logit_layer(task)

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        if task not in self.networks:
            raise ValueError(f"unknown task {task!r}; this model has {list(self.task_names)}")
        return list(self.networks[task].parameters())
