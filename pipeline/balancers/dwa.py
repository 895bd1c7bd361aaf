"""Dynamic Weight Average (Liu, Johns and Davison 2019): weights from the epoch loss ratios."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field

from pipeline.balancers.base import Balancer
from pipeline.config import MethodSettings, Params

EPS = 1e-8


def loss_history(epochs: Sequence[Sequence[float]] | torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Epoch losses as a float64 ``(E, K)`` tensor, oldest epoch first (``(0, K)`` when empty)."""
    return torch.as_tensor(epochs, dtype=torch.float64).reshape(-1, num_tasks)


def dwa_weights(history: torch.Tensor, temperature: float) -> torch.Tensor:
    """DWA weights for the next epoch.

    Args:
        history: ``(E, K)`` mean unweighted epoch losses ``L_k(t)`` of the epochs completed so far,
            oldest first.
        temperature: softmax temperature ``T``.

    Returns:
        ``(K,)`` float64 ``w_k = K * softmax_k(r_k / T)`` with ``r_k = L_k(E-1) / (L_k(E-2) + 1e-8)``;
        all ones while fewer than two epochs are recorded. The weights sum to K.
    """
    num_epochs, num_tasks = history.shape
    if num_epochs < 2:
        return torch.ones(num_tasks, dtype=torch.float64)
    ratios = history[-1] / (history[-2] + EPS)
    return num_tasks * torch.softmax(ratios / temperature, dim=0)


class DWASettings(MethodSettings):
    temperature: float = Field(2.0, gt=0.0, description="the softmax temperature T")


class DWABalancer(Balancer):
    """Per-epoch weights :func:`dwa_weights` at a fixed temperature (``balancer.dwa.temperature``)."""

    name = "dwa"
    settings_model: ClassVar[type[MethodSettings]] = DWASettings

    def __init__(self, task_names: Sequence[str], temperature: float = 2.0):
        super().__init__(task_names)
        self.base_temperature = temperature
        self.history = loss_history([], self.num_tasks)

    @classmethod
    def from_params(cls, task_names: Sequence[str], params: Params) -> DWABalancer:
        return cls(task_names, temperature=DWASettings.of(params, cls.name).temperature)

    def weights(self) -> torch.Tensor:
        return dwa_weights(self.history, self.temperature())

    def temperature(self) -> float:
        return self.base_temperature

    def end_epoch(self, epoch_losses: torch.Tensor) -> None:
        losses = torch.as_tensor(epoch_losses).detach().to("cpu", torch.float64)
        if losses.shape != (self.num_tasks,):
            raise ValueError(f"expected {self.num_tasks} epoch losses, got shape {tuple(losses.shape)}")
        self.history = torch.cat([self.history, losses[None]])
        self._weights_changed()

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = loss_history(state["history"], self.num_tasks).clone()
        self._weights_changed()
