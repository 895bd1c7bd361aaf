"""Equal weighting: the plain sum of the task losses (the SSC-ResNet baseline of seed 001)."""

from __future__ import annotations

from pipeline.balancers.base import Balancer


class EqualBalancer(Balancer):
    """``w_k = 1`` for every task, always."""

    name = "equal"
