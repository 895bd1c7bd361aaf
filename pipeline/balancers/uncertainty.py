"""Homoscedastic-uncertainty weighting (Kendall, Gal and Cipolla 2018)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pipeline.balancers.base import Balancer


class UncertaintyBalancer(Balancer):
    """Total loss ``sum_k exp(-s_k) * L_k + s_k`` with learned log-variances ``s_k`` (initially 0).

    ``s`` ``(K,)`` is returned by :meth:`parameters` and trained by the loop's optimiser with the
    model; :meth:`weights` are ``exp(-s_k)``, which do not sum to K.
    """

    name = "uncertainty"

    def __init__(self, task_names: Sequence[str]):
        super().__init__(task_names)
        self.log_variances = nn.Parameter(torch.zeros(self.num_tasks))

    def to(self, device: torch.device | str) -> UncertaintyBalancer:
        super().to(device)
        self.log_variances = nn.Parameter(self.log_variances.detach().to(self.device))
        return self

    def weights(self) -> torch.Tensor:
        return torch.exp(-self.log_variances.detach()).double()

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_variances]

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        s = self.log_variances.to(losses.dtype)
        return (torch.exp(-s) * losses + s).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"log_variances": self.log_variances.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.log_variances.copy_(state["log_variances"])
