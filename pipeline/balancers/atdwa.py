"""Adaptive-Temperature DWA (seed 001, eqs 1-5): DWA whose temperature rises with loss volatility."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from pipeline.balancers.dwa import DWABalancer
from pipeline.config import MethodSettings, Params


def atdwa_temperature(history: torch.Tensor, t0: float, gamma: float, window: int) -> float:
    """Temperature ``T(t) = t0 * (1 + gamma * u)`` for the epoch after ``history``.

    Args:
        history: ``(E, K)`` mean unweighted epoch losses of the epochs completed so far, oldest first.
        t0: base temperature ``T0``.
        gamma: sensitivity to volatility.
        window: number of most recent epochs whose spread measures volatility.

    ``u`` is the mean over tasks of the *population* standard deviation (divisor n, not n - 1) of
    each task's last ``window`` epoch losses. The paper's eq. 2 writes the window ending at
    ``L_k(t)``; that loss is unknown when epoch t's weights are set, so the window ends at the last
    completed epoch ``t - 1``. With 2 .. window-1 epochs the spread is over those available; with
    fewer than 2 the temperature is ``t0`` (and the weights are all ones, as in DWA).
    """
    if history.shape[0] < 2:
        return t0
    spread = history[-window:].std(dim=0, correction=0)
    return t0 * (1.0 + gamma * float(spread.mean()))


class ATDWASettings(MethodSettings):
    t0: float = Field(2.0, gt=0.0, description="base temperature T0")
    gamma: float = Field(0.8, ge=0.0, description="sensitivity of the temperature to loss volatility")
    window: int = Field(3, ge=2, description="epochs whose loss spread measures volatility")


class ATDWABalancer(DWABalancer):
    """DWA weights (same loss ratios) at the adaptive temperature :func:`atdwa_temperature`.

    With ``gamma = 0`` it is DWA with ``T = t0``.
    """

    name = "atdwa"
    settings_model = ATDWASettings

    def __init__(self, task_names: Sequence[str], t0: float = 2.0, gamma: float = 0.8, window: int = 3):
        super().__init__(task_names, temperature=t0)
        self.gamma = gamma
        self.window = window

    @classmethod
    def from_params(cls, task_names: Sequence[str], params: Params) -> ATDWABalancer:
        p = ATDWASettings.of(params, cls.name)
        return cls(task_names, t0=p.t0, gamma=p.gamma, window=p.window)

    def temperature(self) -> float:
        return atdwa_temperature(self.history, self.base_temperature, self.gamma, self.window)
