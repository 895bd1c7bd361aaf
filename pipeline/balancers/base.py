"""The interface every task balancer implements.

K tasks. The training loop calls, in this order::

    head_inputs = balancer.head_inputs(features)           # once per micro-batch
    outputs = model.decode(head_inputs); losses = [...]     # K unweighted scalar losses, this micro-batch
    balancer.backward(losses, model, features, head_inputs, scale)   # accumulates .grad
    balancer.step(comm, skipped)                            # once per optimiser step, after optimiser.step()
    balancer.end_epoch(epoch_losses)                        # (K,) mean train losses of the epoch, all ranks

``backward`` takes the K losses as separate scalar tensors in ``task_names`` order, not stacked:
a stacked tensor joins the heads' graphs, so a per-task gradient would run every head's backward.
``weights()`` are the weights applied during the current epoch/step. All state that influences
future weights is in ``state_dict()`` so that a resumed run continues identically.

Device: a balancer is built on the CPU and moved with :meth:`Balancer.to` to the training device before
its parameters are handed to an optimiser; every tensor a step touches (learned weights, their optimiser
state, accumulation buffers, the weights ``combine`` applies) then lives there, so a step makes no host
round-trip and an all-reduce sees only tensors of one device. Epoch-level records (DWA's loss history,
K numbers an epoch) stay on the CPU.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import torch
from torch import nn

from pipeline.config import MethodSettings, Params
from pipeline.models.base import MultiTaskModel
from pipeline.runtime.comm import Comm


class Balancer(ABC):
    """A method of balancing K task losses. A subclass that sets ``name`` is a plug-in: defining it in a module of
    :mod:`pipeline.balancers` makes it selectable in ``train.balancers`` (:func:`pipeline.balancers.balancer_class`),
    with its settings ``balancer.<name>`` validated by its ``settings_model``."""

    name: ClassVar[str]
    settings_model: ClassVar[type[MethodSettings]] = MethodSettings
    """The schema of ``balancer.<name>`` (the base class: no settings)."""
    separate_networks: ClassVar[bool] = False
    """True for a method that trains one whole network per task side by side (the STL baseline,
    :mod:`pipeline.models.separate`) instead of one network with a head per task."""

    def __init__(self, task_names: Sequence[str]):
        self.task_names = tuple(task_names)
        self.num_tasks = len(self.task_names)
        self.device = torch.device("cpu")
        self._loss_weights: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Self:
        """Move the balancer's state to ``device`` and return it; its :meth:`parameters` are new objects
        afterwards, so call it before handing them to an optimiser."""
        self.device = torch.device(device)
        self._weights_changed()
        return self

    @classmethod
    def from_params(cls, task_names: Sequence[str], params: Params) -> Balancer:
        """Build from the params; a balancer with settings reads its own section with
        ``<its settings_model>.of(params, cls.name)``."""
        return cls(task_names)

    def weights(self) -> torch.Tensor:
        """Current task weights ``(K,)``, float64, detached (for logging; ``combine`` uses :meth:`loss_weights`)."""
        return torch.ones(self.num_tasks, dtype=torch.float64)

    def temperature(self) -> float | None:
        """Softmax temperature in use (DWA/ATDWA), else None."""
        return None

    def parameters(self) -> list[nn.Parameter]:
        """Learnable balancer parameters to be optimised (and synchronised) with the model's."""
        return []

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        """Weighted total loss (scalar) from unweighted per-task losses ``(K,)``."""
        return (self.loss_weights().to(losses.dtype) * losses).sum()

    def loss_weights(self) -> torch.Tensor:
        """:meth:`weights` as float32 on the balancer's device, copied there once each time they change
        (subclasses whose weights change call :meth:`_weights_changed`), not once per micro-batch."""
        if self._loss_weights is None:
            self._loss_weights = self.weights().to(self.device, torch.float32)
        return self._loss_weights

    def _weights_changed(self) -> None:
        self._loss_weights = None

    def directly_written_parameters(self, model: MultiTaskModel) -> list[nn.Parameter]:
        """Parameters of ``model`` whose ``.grad`` :meth:`backward` assigns itself instead of through autograd's
        accumulation (no post-accumulate-grad hook fires for them; the gradient all-reduce handles them last)."""
        return []

    def head_inputs(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """What the heads read; identity unless the balancer needs to cut the graph there."""
        return features

    def backward(
        self,
        losses: Sequence[torch.Tensor],
        model: MultiTaskModel,
        features: list[torch.Tensor],
        head_inputs: list[torch.Tensor],
        scale: float | torch.Tensor = 1.0,
    ) -> None:
        """Accumulate ``scale * d combine(losses) / d params`` into ``.grad`` of model and balancer."""
        (self.combine(torch.stack(tuple(losses))) * scale).backward()

    def step(self, comm: Comm, skipped: torch.Tensor | None = None) -> None:
        """Called once per optimiser step, after the step's backward calls and the optimiser step.

        ``skipped``: a bool scalar on the training device, true when the optimiser skipped this step
        (an fp16 overflow); None when steps are never skipped.
        """

    def end_epoch(self, epoch_losses: torch.Tensor) -> None:
        """Record the epoch's mean unweighted train losses ``(K,)`` (identical on every rank)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
