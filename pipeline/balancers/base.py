"""The interface every task balancer implements.

K tasks. The training loop calls, in this order::

    head_inputs = balancer.head_inputs(features)           # once per micro-batch
    outputs = model.decode(head_inputs); losses = [...]     # K unweighted scalar losses, this micro-batch
    balancer.backward(losses, model, features, head_inputs, scale)   # accumulates .grad
    balancer.step(comm, skipped)                            # once per optimiser step, after optimiser.step()
    balancer.end_epoch(epoch_losses)                        # (K,) mean train losses of the epoch, all ranks

How an optimiser step is taken is the balancer's too (:meth:`Balancer.train_step`): by default the loop above once
per micro-batch, then one optimiser step of every parameter; a method that updates the tasks' parameters in turn
(MT-CooL) takes the step its own way from the same :class:`TrainStep`.

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

import contextlib
from abc import ABC
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import torch
from torch import nn

from pipeline.config import MethodSettings, Params
from pipeline.models import build_model
from pipeline.models.base import MultiTaskModel
from pipeline.runtime.comm import Comm
from pipeline.runtime.compute_format import ComputeFormat
from pipeline.runtime.inference import task_losses
from pipeline.tasks import Task


class GradientSync(Protocol):
    """Averages gradients over ranks while the last micro-batch's backward pass runs
    (:class:`pipeline.train.grad_sync.GradientReducer`)."""

    def arm(self) -> None: ...

    def finish(self) -> None: ...


@dataclass
class TrainStep:
    """What one optimiser step of the training loop works with.

    ``micro_batches``: this rank's ``grad_accum_steps`` chunks of the step's global batch, on the device
    (``{"image": (b, C, H, W), <target>: ...}``); ``seed_dropout(m)`` seeds the dropout masks of chunk ``m`` by its
    global index, so any (workers, accumulation) pair with the same product draws the same masks;
    ``reducer`` averages gradients over ranks (None on one rank).
    """

    model: MultiTaskModel
    optimizer: torch.optim.Optimizer
    tasks: tuple[Task, ...]
    loss_fns: Sequence[nn.Module]
    micro_batches: Sequence[dict[str, torch.Tensor]]
    seed_dropout: Callable[[int], None]
    compute: ComputeFormat
    comm: Comm
    reducer: GradientSync | None = None


class Balancer(ABC):
    """A method of balancing K task losses. A subclass that sets ``name`` is a plug-in: defining it in a module of
    :mod:`pipeline.balancers` makes it selectable in ``train.balancers`` (:func:`pipeline.balancers.balancer_class`),
    with its settings ``balancer.<name>`` validated by its ``settings_model``."""

    name: ClassVar[str]
    settings_model: ClassVar[type[MethodSettings]] = MethodSettings
    """The schema of ``balancer.<name>`` (the base class: no settings)."""

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

    @classmethod
    def check_params(cls, params: Params) -> None:
        """Raise :class:`~pipeline.errors.ConfigError` naming the key when ``params`` ask of this method what it
        cannot do (called by :func:`~pipeline.balancers.check_methods` after every method's settings are validated,
        for the methods ``params`` train or sweep); by default there is nothing more to check."""

    @classmethod
    def build_network(cls, params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
        """The network this method trains (and evaluation and the registry rebuild): by default ``model.name``
        with a head per task; STL and MT-CooL build one network per task."""
        return build_model(params, tasks)

    def parameter_groups(self, model: MultiTaskModel) -> list[list[nn.Parameter]]:
        """The optimiser's parameter groups: by default one, the model's parameters and the balancer's."""
        return [list(model.parameters()) + self.parameters()]

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

    def train_step(self, step: TrainStep) -> torch.Tensor:
        """Take one optimiser step; returns the sum over this rank's micro-batches of the unweighted losses ``(K,)``.

        Each micro-batch's losses are scaled by ``1 / grad_accum_steps`` (and the loss scale) and accumulated by
        :meth:`backward`; the gradients are averaged over ranks, the optimiser steps every parameter at once and
        :meth:`step` follows.
        """
        scale = step.compute.loss_scale() / len(step.micro_batches)
        loss_sum = torch.zeros(len(step.tasks), device=step.micro_batches[0]["image"].device)
        for m, batch in enumerate(step.micro_batches):
            if step.reducer is not None and m == len(step.micro_batches) - 1:
                step.reducer.arm()  # the all-reduce of each bucket starts as its gradients are complete
            step.seed_dropout(m)
            loss_sum += forward_backward(step.model, self, step.tasks, step.loss_fns, batch, scale, step.compute)
        if step.reducer is not None:
            step.reducer.finish()  # before unscaling, so an fp16 overflow skips the step on every rank
        step.compute.unscale_(step.optimizer)
        skipped = step.compute.step(step.optimizer)
        self.step(step.comm, skipped)
        step.optimizer.zero_grad(set_to_none=True)
        return loss_sum

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


def forward_backward(
    model: MultiTaskModel,
    balancer: Balancer,
    tasks: tuple[Task, ...],
    loss_fns: Sequence[nn.Module],
    batch: dict[str, torch.Tensor],
    scale: float | torch.Tensor = 1.0,
    compute: ComputeFormat | None = None,
) -> torch.Tensor:
    """Forward one chunk and let the balancer accumulate ``scale``-weighted gradients; returns losses ``(K,)``.

    The forward pass runs in ``compute``'s layout and autocast (float32 by default); the heads' outputs are cast
    to float32, so losses and the balancer's backward are float32 whatever the precision.
    """
    images = batch["image"] if compute is None else compute.prepare_images(batch["image"])
    with compute.autocast() if compute is not None else contextlib.nullcontext():
        features = model.encode(images)
        head_inputs = balancer.head_inputs(features)
        outputs = model.decode(head_inputs)
    outputs = {name: out.float() for name, out in outputs.items()}
    losses = task_losses(tasks, list(loss_fns), outputs, batch)
    balancer.backward(losses, model, features, head_inputs, scale)
    return torch.stack(losses).detach()
