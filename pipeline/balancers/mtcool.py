"""MT-CooL (seed 002: Wu, Zhang, Sun, Mo, Nichols and Papież, MICCAI 2023 / IEEE TMI 2025), as we reconstruct it.

Multi-task learning as a multi-level problem: each task has its own network (:mod:`pipeline.models.cooperative`),
whose prediction reads the other tasks' features; the networks are updated in turn, each taking the others' current
solution as given, and each seeks a flat minimum so that it stays good when the others change. The papers' method
sections are not available to us: every open choice is a setting of ``balancer.mtcool`` (logged to MLflow with the
run), its defaults ours, not the paper's (README "MT-CooL").

One optimiser step, on the step's global batch (every micro-batch of every rank):

* **Alternating updates.** ``gauss_seidel``: for each task k in order, a gradient of task k's loss with respect to
  θ_k alone, averaged over ranks, and an optimiser step of θ_k alone; later tasks see the earlier ones' updated
  networks. ``jacobi``: every task's gradient against the others as they were at the step's start, then one step.
  The other networks enter detached (their features offered with no gradient) and with their BatchNorm statistics
  frozen (:func:`statistics_frozen`); θ_k has its own Adam state (a parameter group of its own; Adam keeps state per
  parameter and passes over parameters without a gradient), so a task's update leaves every other network's
  parameters and optimiser state bit-identical.
* **Flat-minima search** (SAM-style, first order), radius ρ (``rho``; 0 turns it off). One ascent step finds the
  perturbation ε = ρ g / ||g|| of what ``perturb`` names, the gradient of task k's loss is taken at the perturbed
  point and applied at the unperturbed one:

  - ``features`` (default): the other tasks' offered features, per image (``g`` is the gradient with respect to all
    of one image's offered features, so every image's perturbation has norm ρ, whatever the batch or workers);
  - ``others``, ``own``, ``all``: the other networks' parameters, θ_k, or both; ``g`` is the step's global-batch
    gradient (summed over micro-batches, averaged over ranks), so ||ε|| = ρ over those parameters. The perturbed
    parameters are restored from a copy afterwards, bit for bit.

  The unperturbed pass records θ_k's BatchNorm statistics as any training pass does; the perturbed pass does not.
  The loss reported for the epoch is the unperturbed one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal, cast

import torch
from pydantic import Field
from torch import nn

from pipeline.balancers.base import Balancer, TrainStep
from pipeline.config import MethodSettings, Params
from pipeline.errors import ConfigError
from pipeline.models import check_model
from pipeline.models.base import MultiTaskModel
from pipeline.models.cooperative import CooperativeModels, FusionLevel, FusionMode, statistics_frozen
from pipeline.runtime.comm import Comm
from pipeline.tasks import Task

EPS = 1e-12
"""Guards the normalisation of an ascent gradient that is zero."""


class MTCoolSettings(MethodSettings):
    rho: float = Field(0.05, ge=0.0, description="radius of the flat-minima search; 0 turns it off")
    perturb: Literal["features", "others", "own", "all"] = Field(
        "features",
        description="what the search perturbs: the other tasks' features, their parameters, θ_k, θ_k and theirs",
    )
    fusion: FusionMode = Field("concat", description="how a task reads the others' features; none: STL's networks")
    fusion_at: FusionLevel = Field("bottleneck", description="where: the bottleneck or every encoder scale")
    order: Literal["gauss_seidel", "jacobi"] = Field(
        "gauss_seidel", description="later tasks see the earlier tasks' update of the step (gauss_seidel) or not"
    )


class MTCoolBalancer(Balancer):
    """Cooperative multi-level training with a flat-minima search (module docstring); task weights are all 1."""

    name = "mtcool"
    settings_model = MTCoolSettings

    def __init__(self, task_names: Sequence[str], settings: MTCoolSettings | None = None):
        super().__init__(task_names)
        self.settings = settings or MTCoolSettings()

    @classmethod
    def from_params(cls, task_names: Sequence[str], params: Params) -> MTCoolBalancer:
        return cls(task_names, MTCoolSettings.of(params, cls.name))

    @classmethod
    def check_params(cls, params: Params) -> None:
        """The backbone can fuse where asked, the search has something to perturb, and the precision needs no loss
        scaler (fp16's scaler takes one step per update, MT-CooL takes one per task)."""
        s = MTCoolSettings.of(params, cls.name)
        where = f"{params.source}: balancer.{cls.name}"
        backbone = check_model(params)
        if s.fusion != "none" and s.fusion_at not in backbone.fusion_layers:
            offered = sorted(backbone.fusion_layers) or "no fusion"
            raise ConfigError(
                f"{where}.fusion_at = {s.fusion_at!r}: model {backbone.name} offers {offered}; "
                "choose one of those or fusion: none"
            )
        if s.rho > 0 and s.fusion == "none" and s.perturb in ("features", "others"):
            raise ConfigError(
                f"{where}.perturb = {s.perturb!r}: with fusion: none no task reads the others, so there is nothing "
                "of theirs to perturb; choose own, or a fusion"
            )
        if params.train.amp == "fp16":
            raise ConfigError(
                f"{where}: train.amp = 'fp16' is not supported (one optimiser step per task); use bf16 or off"
            )

    @classmethod
    def build_network(cls, params: Params, tasks: Sequence[Task]) -> MultiTaskModel:
        s = MTCoolSettings.of(params, cls.name)
        backbone = check_model(params)
        shape = (params.data.channels, params.data.image_size, params.data.image_size)
        return CooperativeModels(
            tasks, lambda task: backbone.from_params(params, (task,)), s.fusion, s.fusion_at, shape
        )

    def parameter_groups(self, model: MultiTaskModel) -> list[list[nn.Parameter]]:
        """One group per task, θ_k: its network and its fusion layers."""
        return [model.task_parameters(name) for name in self.task_names]

    def train_step(self, step: TrainStep) -> torch.Tensor:
        model = cast(CooperativeModels, step.model)
        scale = step.compute.loss_scale() / len(step.micro_batches)
        losses = torch.zeros(self.num_tasks, device=step.micro_batches[0]["image"].device)
        rounds = (
            [[k] for k in range(self.num_tasks)]
            if self.settings.order == "gauss_seidel"
            else [list(range(self.num_tasks))]
        )
        for tasks in rounds:
            for k in tasks:
                losses[k] += self._task_gradient(step, model, k, scale)
            _average_gradients(step.comm, [p for k in tasks for p in model.task_parameters(self.task_names[k])])
            step.compute.unscale_(step.optimizer)
            step.compute.step(step.optimizer)
            step.optimizer.zero_grad(set_to_none=True)
        return losses

    # ------------------------------------------------------------------ one task's gradient
    def _task_gradient(
        self, step: TrainStep, model: CooperativeModels, k: int, scale: float | torch.Tensor
    ) -> torch.Tensor:
        """Accumulate ``scale``-weighted d L_k / d θ_k over the micro-batches into ``.grad`` (at the perturbed point
        when ρ > 0); returns the sum of the unperturbed losses L_k (a scalar)."""
        if self.settings.rho == 0:
            return self._plain_gradient(step, model, k, scale)
        if self.settings.perturb == "features":
            return self._feature_perturbed_gradient(step, model, k, scale)
        return self._parameter_perturbed_gradient(step, model, k, scale)

    def _plain_gradient(
        self, step: TrainStep, model: CooperativeModels, k: int, scale: float | torch.Tensor
    ) -> torch.Tensor:
        total = torch.zeros((), device=step.micro_batches[0]["image"].device)
        for m, batch in enumerate(step.micro_batches):
            step.seed_dropout(m)
            loss = _task_loss(step, model, k, batch, _offers(step, model, k, batch))
            (loss * scale).backward()
            total += loss.detach()
        return total

    def _feature_perturbed_gradient(
        self, step: TrainStep, model: CooperativeModels, k: int, scale: float | torch.Tensor
    ) -> torch.Tensor:
        total = torch.zeros((), device=step.micro_batches[0]["image"].device)
        own = model.networks[self.task_names[k]]
        for m, batch in enumerate(step.micro_batches):
            offers = [
                [f.detach().float().requires_grad_() for f in features] for features in _offers(step, model, k, batch)
            ]
            leaves = [f for features in offers for f in features]
            step.seed_dropout(m)
            loss = _task_loss(step, model, k, batch, offers)
            ascent = torch.autograd.grad(loss, leaves, allow_unused=True)
            ascent = tuple(torch.zeros_like(f) if g is None else g for f, g in zip(leaves, ascent))
            perturbed = iter(perturb_per_image(leaves, ascent, self.settings.rho))
            at_perturbed = [[next(perturbed) for _ in features] for features in offers]
            step.seed_dropout(m)
            with statistics_frozen(own):
                perturbed_loss = _task_loss(step, model, k, batch, at_perturbed)
            (perturbed_loss * scale).backward()
            total += loss.detach()
        return total

    def _parameter_perturbed_gradient(
        self, step: TrainStep, model: CooperativeModels, k: int, scale: float | torch.Tensor
    ) -> torch.Tensor:
        name, scope = self.task_names[k], self.settings.perturb
        others = [p for other in self.task_names if other != name for p in model.task_parameters(other)]
        perturbed = [
            p
            for p in (model.task_parameters(name) if scope in ("own", "all") else [])
            + (others if scope in ("others", "all") else [])
            if p.requires_grad
        ]
        total = torch.zeros((), device=step.micro_batches[0]["image"].device)
        ascent = [torch.zeros_like(p) for p in perturbed]
        for m, batch in enumerate(step.micro_batches):  # the ascent direction, on the step's global batch
            step.seed_dropout(m)
            offers = _offers(step, model, k, batch, with_grad=scope in ("others", "all"))
            loss = _task_loss(step, model, k, batch, offers)
            for a, g in zip(ascent, torch.autograd.grad(loss * scale, perturbed, allow_unused=True)):
                if g is not None:
                    a.add_(g)
            total += loss.detach()
        direction = step.comm.all_reduce_mean(torch.cat([a.reshape(-1) for a in ascent]))
        with parameters_perturbed(perturbed, direction, self.settings.rho), statistics_frozen(model.networks[name]):
            for m, batch in enumerate(step.micro_batches):
                step.seed_dropout(m)
                perturbed_loss = _task_loss(step, model, k, batch, _offers(step, model, k, batch))
                (perturbed_loss * scale).backward()
        return total


@contextlib.contextmanager
def parameters_perturbed(parameters: Sequence[nn.Parameter], direction: torch.Tensor, rho: float) -> Iterator[None]:
    """``parameters`` moved by ``epsilon = rho * direction / ||direction||`` while the block runs (``direction``: one
    flat ``(P,)`` tensor over all of them, in order), then restored from copies, bit for bit."""
    unperturbed = [p.detach().clone() for p in parameters]
    epsilon = rho * direction / (direction.norm() + EPS)
    with torch.no_grad():
        offset = 0
        for p in parameters:
            p.add_(epsilon[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(parameters, unperturbed):
                p.copy_(value)


def perturb_per_image(
    features: Sequence[torch.Tensor], ascent: Sequence[torch.Tensor], rho: float
) -> list[torch.Tensor]:
    """``features + rho * g / ||g||`` with the norm taken per image over all of ``ascent`` (each ``(B, ...)``): every
    image's perturbation of all the features together has norm ``rho``. Returns detached tensors."""
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in ascent]).sum(0).sqrt()  # (B,)
    return [(f + rho * g / (norms.view(-1, *[1] * (g.ndim - 1)) + EPS)).detach() for f, g in zip(features, ascent)]


def _offers(
    step: TrainStep, model: CooperativeModels, k: int, batch: dict[str, torch.Tensor], with_grad: bool = False
) -> list[list[torch.Tensor]]:
    """What every other task's network offers task ``k`` for ``batch``: per other task (in task order) its features at
    the fusion layers, computed with its BatchNorm statistics frozen and, unless ``with_grad``, without a graph."""
    if not model.fuses:
        return []
    name = model.task_names[k]
    images = step.compute.prepare_images(batch["image"])
    offers = []
    for other in model.task_names:
        if other == name:
            continue
        with torch.set_grad_enabled(with_grad), statistics_frozen(model.networks[other]), step.compute.autocast():
            offers.append(model.offered(images, other))
    return offers


def _task_loss(
    step: TrainStep,
    model: CooperativeModels,
    k: int,
    batch: dict[str, torch.Tensor],
    offers: Sequence[Sequence[torch.Tensor]],
) -> torch.Tensor:
    """Task ``k``'s unweighted loss (float32 scalar) on ``batch``, its network reading ``offers``."""
    task = step.tasks[k]
    with step.compute.autocast():
        logits = model.fused(step.compute.prepare_images(batch["image"]), task.name, offers)
    return step.loss_fns[k](logits.float(), batch[task.target])


def _average_gradients(comm: Comm, parameters: Sequence[nn.Parameter]) -> None:
    """Replace the ``.grad`` of ``parameters`` (those that have one; the same on every rank) by its mean over ranks."""
    if comm.world_size == 1:
        return
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad:
        return
    mean = comm.all_reduce_mean(torch.cat([cast(torch.Tensor, p.grad).reshape(-1) for p in with_grad]))
    offset = 0
    for p in with_grad:
        cast(torch.Tensor, p.grad).copy_(mean[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
