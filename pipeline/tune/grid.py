"""The sweep's search space: the grid ``tune.grid`` over the settings of ``tune.balancer``, and the params of one
trial."""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from pipeline.config import Params, TuneParams, deep_merge, parse_params


def grid_keys(settings: TuneParams) -> tuple[str, ...]:
    """The swept settings in the order the grid gives them (rows of the sweep's table sort by them)."""
    return tuple(settings.grid)


def param_space(settings: TuneParams) -> dict[str, Any]:
    """Ray Tune's param space: the full grid, one trial per combination of the swept settings' values."""
    return {key: tune.grid_search(list(values)) for key, values in settings.grid.items()}


def grid_size(settings: TuneParams) -> int:
    """Number of trials in the grid."""
    return math.prod(len(values) for values in settings.grid.values())


def trial_key(config: dict[str, Any]) -> str:
    """A readable, stable identifier of a grid point, its settings by name: ``"gamma=0.8 t0=2 window=3"``."""
    return " ".join(f"{key}={config[key]:g}" for key in sorted(config))


def settings_override(balancer: str, config: dict[str, Any]) -> dict[str, Any]:
    """The params overlay that sets ``balancer`` to a grid point: ``{"balancer": {<balancer>: {...}}}``."""
    return {"balancer": {balancer: dict(config)}}


def trial_params(params: Params, config: dict[str, Any]) -> Params:
    """``params`` with the swept balancer set to ``config`` and ``train.epochs`` set to ``tune.epochs`` (when
    given)."""
    override = settings_override(params.tune.balancer, config)
    if params.tune.epochs is not None:
        override["train"] = {"epochs": params.tune.epochs}
    return parse_params(deep_merge(params.model_dump(mode="json"), override), f"tune trial {trial_key(config)}")
