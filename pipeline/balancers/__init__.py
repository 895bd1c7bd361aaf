"""Task balancers, one per file behind :class:`~pipeline.balancers.base.Balancer`.

A balancer is registered by being defined: every subclass of ``Balancer`` with a ``name`` in a module of this
package is a method ``train.balancers`` can name, with its settings ``balancer.<name>`` (see
:func:`pipeline.plugins.discover`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from pipeline.balancers.atdwa import ATDWABalancer, atdwa_temperature
from pipeline.balancers.base import Balancer
from pipeline.balancers.dwa import DWABalancer, dwa_weights
from pipeline.balancers.equal import EqualBalancer, SeparateTasksBalancer
from pipeline.balancers.gradnorm import GradNormBalancer, gradnorm_weight_grad
from pipeline.balancers.mtcool import MTCoolBalancer
from pipeline.balancers.uncertainty import UncertaintyBalancer
from pipeline.config import Params
from pipeline.errors import ConfigError
from pipeline.models import check_model
from pipeline.plugins import discover


@functools.cache
def balancer_classes() -> dict[str, type[Balancer]]:
    """Every registered balancer by name (the plug-ins of this package)."""
    return discover(__name__, Balancer)


def balancer_class(name: str) -> type[Balancer]:
    """The balancer called ``name``; an unknown name raises :class:`ConfigError` listing the known ones."""
    cls = balancer_classes().get(name)
    if cls is None:
        raise ConfigError(f"train.balancers: unknown balancer {name!r}; expected one of {sorted(balancer_classes())}")
    return cls


def check_methods(params: Params) -> None:
    """Check what ``params`` names among the plug-ins before anything trains: every ``train.balancers`` entry and
        every ``balancer.<name>`` section is a registered balancer, each section is valid for it, ``tune.grid`` holds
        valid settings of the registered ``tune.balancer``, and ``model.name`` is a registered network that can be
        what ``params`` ask, and each method trained or swept can do what ``params`` ask of it
    (:meth:`~pipeline.balancers.base.Balancer.check_params`). Raises :class:`ConfigError` naming the params file and the key."""
    known = sorted(balancer_classes())
    for key, names in (("train.balancers", params.train.balancers), ("balancer", tuple(params.balancer))):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ConfigError(f"{params.source}: {key}: unknown balancers {unknown}; expected names of {known}")
    for name, cls in balancer_classes().items():
        cls.settings_model.of(params, name)
    _check_sweep(params)
    check_model(params)
    for name in dict.fromkeys((*params.train.balancers, params.tune.balancer)):
        balancer_class(name).check_params(params)


def _check_sweep(params: Params) -> None:
    """``tune.balancer`` is a registered balancer and every value of ``tune.grid`` is a valid setting of it."""
    swept = balancer_classes().get(params.tune.balancer)
    if swept is None:
        raise ConfigError(
            f"{params.source}: tune.balancer = {params.tune.balancer!r}: expected one of {sorted(balancer_classes())}"
        )
    settings = swept.settings_model.model_fields
    unknown = [key for key in params.tune.grid if key not in settings]
    if unknown:
        raise ConfigError(
            f"{params.source}: tune.grid: {unknown} are not settings of {swept.name}; its settings are {list(settings)}"
        )
    for key, values in params.tune.grid.items():
        for value in values:
            swept.settings_model.validated({key: value}, params.source, ("tune", "grid"))


def build_balancer(name: str, task_names: Sequence[str], params: Params) -> Balancer:
    """The balancer called ``name`` for ``task_names``, configured from ``params.balancer.<name>``."""
    return balancer_class(name).from_params(task_names, params)


__all__ = [
    "ATDWABalancer",
    "Balancer",
    "DWABalancer",
    "EqualBalancer",
    "GradNormBalancer",
    "MTCoolBalancer",
    "SeparateTasksBalancer",
    "UncertaintyBalancer",
    "atdwa_temperature",
    "balancer_class",
    "balancer_classes",
    "build_balancer",
    "check_methods",
    "dwa_weights",
    "gradnorm_weight_grad",
]
