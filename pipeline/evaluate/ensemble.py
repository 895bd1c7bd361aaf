"""A fold ensemble (nnU-Net style): the fold models of one balancer as one network that averages their
probabilities.

Member ``i`` gives a task's logits ``x_i``; the ensemble gives the logits ``z`` whose probabilities are the
members' mean probabilities:

- binary segmentation ``(B, 1, H, W)``: ``sigmoid(z) = mean_i sigmoid(x_i)``, from
  ``z = logsumexp_i logsigmoid(x_i) - logsumexp_i logsigmoid(-x_i)`` (the log of the mean foreground
  probability minus that of the mean background probability; the ``1/k`` cancels), finite wherever the
  ``x_i`` are, even where every member's probability rounds to 0 or 1;
- multi-class segmentation ``(B, K, H, W)`` and classification ``(B, K)``: ``softmax(z) = mean_i softmax(x_i)``,
  from ``z = log mean_i softmax(x_i) = logsumexp_i log_softmax(x_i) - log k``.

Whatever reads logits therefore reads the averaged probabilities, up to float32 rounding: the evaluation's
:class:`~pipeline.runtime.metrics.TaskMetrics` (logit > 0 is mean probability > 0.5, the arg-max is that
of the mean probabilities, the pixel AUC ranks by a monotone function of them) and the registered model's
output (:func:`pipeline.registry.pyfunc.probability_frame`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.tasks import Task


def mean_probability_logits(kind: str, logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The logits of the mean probability of the members' ``logits`` (each of one shape, see the module
    docstring) for a task of ``kind``; float32, same shape."""
    stacked = torch.stack([x.float() for x in logits])  # (k, B, C, ...)
    if kind == "binary_segmentation":
        return torch.logsumexp(F.logsigmoid(stacked), dim=0) - torch.logsumexp(F.logsigmoid(-stacked), dim=0)
    return torch.logsumexp(torch.log_softmax(stacked, dim=2), dim=0) - math.log(len(logits))


class FoldEnsemble(nn.Module):
    """``members`` (networks of the same ``tasks``, each mapping images ``(B, C, S, S)`` to ``{task: logits}``)
    as one network with the same inputs and outputs: per task the logits of their mean probabilities."""

    def __init__(self, tasks: Sequence[Task], members: Sequence[nn.Module]):
        super().__init__()
        self.tasks = tuple(tasks)
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = [member(x) for member in self.members]
        return {t.name: mean_probability_logits(t.kind, [out[t.name] for out in outputs]) for t in self.tasks}
