"""Equal weighting: the plain sum of the task losses (the SSC-ResNet baseline of seed 001)."""

from __future__ import annotations

from pipeline.balancers.base import Balancer


class EqualBalancer(Balancer):
    """``w_k = 1`` for every task, always."""

    name = "equal"


class SeparateTasksBalancer(EqualBalancer):
    """The STL baseline's: ``w_k = 1`` over networks that share nothing (:mod:`pipeline.models.separate`), so
    each network learns its own task as if alone."""

    name = "stl"
    separate_networks = True
