"""Equal weighting: the plain sum of the task losses (the SSC-ResNet baseline of seed 001)."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.balancers.base import Balancer
from pipeline.config import Params
from pipeline.models import build_model
from pipeline.models.base import MultiTaskModel
from pipeline.tasks import Task


class EqualBalancer(Balancer):
    """``w_k = 1`` for every task, always."""

    name = "equal"


class SeparateTasksBalancer(EqualBalancer):
    """The STL baseline's: ``w_k = 1`` over networks that share nothing (:mod:`pipeline.models.separate`), so
    each network learns its own task as if alone."""

    name = "stl"

    @classmethod
    def build_network(cls, params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
        return build_model(params, tasks, separate=True)
