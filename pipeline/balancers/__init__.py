"""Task balancers, one per file behind :class:`~pipeline.balancers.base.Balancer`."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.balancers.atdwa import ATDWABalancer, atdwa_temperature
from pipeline.balancers.base import Balancer
from pipeline.balancers.dwa import DWABalancer, dwa_weights
from pipeline.balancers.equal import EqualBalancer, SeparateTasksBalancer
from pipeline.balancers.gradnorm import GradNormBalancer, gradnorm_weight_grad
from pipeline.balancers.uncertainty import UncertaintyBalancer
from pipeline.config import Params
from pipeline.errors import ConfigError

BALANCER_CLASSES: dict[str, type[Balancer]] = {
    cls.name: cls
    for cls in (EqualBalancer, UncertaintyBalancer, DWABalancer, ATDWABalancer, GradNormBalancer, SeparateTasksBalancer)
}


def build_balancer(name: str, task_names: Sequence[str], params: Params) -> Balancer:
    """The balancer called ``name`` for ``task_names``, configured from ``params.balancer``."""
    cls = BALANCER_CLASSES.get(name)
    if cls is None:
        raise ConfigError(f"train.balancers: unknown balancer {name!r}; expected one of {sorted(BALANCER_CLASSES)}")
    return cls.from_params(task_names, params)


__all__ = [
    "BALANCER_CLASSES",
    "ATDWABalancer",
    "Balancer",
    "DWABalancer",
    "EqualBalancer",
    "GradNormBalancer",
    "SeparateTasksBalancer",
    "UncertaintyBalancer",
    "atdwa_temperature",
    "build_balancer",
    "dwa_weights",
    "gradnorm_weight_grad",
]
