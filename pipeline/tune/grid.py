"""The sweep's search space: the (γ, T0, window) grid of ``tune`` params, and the params of one trial."""

from __future__ import annotations

from typing import Any

from ray import tune

from pipeline.config import Params, TuneParams, deep_merge, parse_params

GRID_KEYS = ("gamma", "t0", "window")
"""The ATDWA params the sweep varies: ``balancer.atdwa.<key>``."""


def param_space(settings: TuneParams) -> dict[str, Any]:
    """Ray Tune's param space: the full grid, one trial per (γ, T0, window) combination."""
    return {key: tune.grid_search(list(getattr(settings, key))) for key in GRID_KEYS}


def grid_size(settings: TuneParams) -> int:
    """Number of trials in the grid."""
    return len(settings.gamma) * len(settings.t0) * len(settings.window)


def trial_key(config: dict[str, Any]) -> str:
    """A readable, stable identifier of a grid point: ``"gamma=0.8 t0=2 window=3"``."""
    return " ".join(f"{key}={config[key]:g}" for key in GRID_KEYS)


def atdwa_override(config: dict[str, Any]) -> dict[str, Any]:
    """The params overlay that sets ATDWA to a grid point: ``{"balancer": {"atdwa": {...}}}``."""
    return {"balancer": {"atdwa": {key: config[key] for key in GRID_KEYS}}}


def trial_params(params: Params, config: dict[str, Any]) -> Params:
    """``params`` with ATDWA set to ``config`` and ``train.epochs`` set to ``tune.epochs`` (when given)."""
    override = atdwa_override(config)
    if params.tune.epochs is not None:
        override["train"] = {"epochs": params.tune.epochs}
    return parse_params(deep_merge(params.model_dump(mode="json"), override), f"tune trial {trial_key(config)}")
