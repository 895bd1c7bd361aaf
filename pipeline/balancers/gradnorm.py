"""GradNorm (Chen et al. 2018) at the cost of one backward pass.

Per optimiser step, with W the parameters of ``model.last_shared_layer``:
``G_k = w_k * ||grad_W L_k||``, ``r_k = (L_k / L_k(0)) / mean_j(L_j / L_j(0))``,
``target_k = mean(G) * r_k ** alpha`` (held constant) and ``L_grad = sum_k |G_k - target_k|``,
so ``dL_grad/dw_k = sign(G_k - target_k) * ||grad_W L_k||`` — no second-order gradient.

One micro-batch costs one ordinary backward plus, per task, a vector-Jacobian product through
W's block only: the heads read detached copies of the features (:meth:`head_inputs`), each task's
loss (given separately, not stacked) is differentiated through its own head alone, the per-task feature
gradient at ``features[-1]`` is pulled back to W, and the encoder then runs one backward with the
weighted sum of the task feature gradients.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pipeline.balancers.base import Balancer
from pipeline.config import Params
from pipeline.models.base import MultiTaskModel
from pipeline.train.comm import Comm

EPS = 1e-8
MIN_WEIGHT = 1e-3


def gradnorm_weight_grad(
    weights: torch.Tensor,
    grad_norms: torch.Tensor,
    losses: torch.Tensor,
    initial_losses: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """Gradient of the GradNorm loss with respect to the task weights, ``(K,)``.

    Args:
        weights: task weights ``w`` ``(K,)``.
        grad_norms: ``||grad_W L_k||`` ``(K,)``, unweighted task losses' gradient norms at W.
        losses: this step's mean task losses ``L_k`` ``(K,)``.
        initial_losses: the first step's mean task losses ``L_k(0)`` ``(K,)``.
        alpha: restoring-force exponent.

    Returns ``sign(G_k - target_k) * grad_norms_k`` with ``G = w * grad_norms`` and the target
    ``mean(G) * r_k ** alpha`` treated as a constant; ``1e-8`` guards the loss-ratio divisions.
    """
    norms = weights * grad_norms
    ratios = losses / (initial_losses + EPS)
    relative = ratios / (ratios.mean() + EPS)
    target = norms.mean() * relative**alpha
    return torch.sign(norms - target) * grad_norms


class GradNormBalancer(Balancer):
    """Learned task weights (initially 1, summing to K) updated once per optimiser step.

    Args:
        task_names: the K tasks, in the order of the losses given to :meth:`backward`.
        alpha: GradNorm's ``alpha`` (``balancer.gradnorm.alpha``).
        lr: learning rate of the weights' own Adam optimiser (``balancer.gradnorm.lr``, default ``train.lr``).

    A step's backward passes use the weights from before that step's update. :meth:`step`
    all-reduces the per-task gradients at W (averaged over the step's micro-batches, weighted by
    their ``scale``) together with the step's mean losses, so the norms are those of the whole
    step's gradient and identical on every rank; it then moves the weights by Adam, clamps them to
    at least ``1e-3`` and rescales them to sum to K. The first step's losses become ``L(0)``. A
    step whose losses or gradient norms are not finite leaves the weights unchanged.
    :attr:`last_grad_norms` holds the last update's ``||grad_W L_k||`` ``(K,)`` (float64, CPU; None
    before the first) for logging.

    The heads' computation graphs must be disjoint (true when they share no parameters and no
    operations): each is released after its own task's gradient. Head-parameter gradients are
    written to ``.grad`` directly, not through autograd's accumulation hooks.
    """

    name = "gradnorm"

    def __init__(self, task_names: Sequence[str], alpha: float = 1.5, lr: float = 0.025):
        super().__init__(task_names)
        self.alpha = alpha
        self._weights = nn.Parameter(torch.ones(self.num_tasks, dtype=torch.float64))
        self._optimizer = torch.optim.Adam([self._weights], lr=lr)
        self._initial_losses: torch.Tensor | None = None
        self.last_grad_norms: torch.Tensor | None = None
        self._sums: torch.Tensor | None = None  # (K * P + K,): the two views below, all-reduced at once
        self._grad_sum: torch.Tensor | None = None  # (K, P) scale-weighted sum of grad_W L_k
        self._loss_sum: torch.Tensor | None = None  # (K,) sum of the micro-batch losses
        self._scale_sum = 0.0
        self._micro_batches = 0

    @classmethod
    def from_params(cls, task_names: Sequence[str], params: Params) -> GradNormBalancer:
        g = params.balancer.gradnorm
        return cls(task_names, alpha=g.alpha, lr=g.lr if g.lr is not None else params.train.lr)

    def weights(self) -> torch.Tensor:
        return self._weights.detach().clone()

    def head_inputs(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Detached leaves of ``features``, at least float32, where the task gradients collect.

        Float32/64 features are shared, not copied. Under mixed precision (bf16/fp16 features) the
        leaves are float32 copies, so the task gradients are accumulated in float32: fp16 would
        overflow once multiplied by the loss scale, or underflow without it.
        """
        return [f.detach().to(torch.promote_types(f.dtype, torch.float32)).requires_grad_() for f in features]

    def backward(
        self,
        losses: Sequence[torch.Tensor],
        model: MultiTaskModel,
        features: list[torch.Tensor],
        head_inputs: list[torch.Tensor],
        scale: float = 1.0,
    ) -> None:
        """Accumulate ``scale * d(sum_k w_k L_k)/d params`` and the per-task gradients at W.

        ``losses`` are the K scalar losses computed from ``model.decode(head_inputs)``, with
        ``head_inputs`` from :meth:`head_inputs` of ``features``.
        """
        if tuple(model.task_names) != self.task_names or len(losses) != self.num_tasks:
            raise ValueError(
                f"expected losses of tasks {list(self.task_names)}, got {len(losses)} losses "
                f"for a model with tasks {list(model.task_names)}"
            )
        shared = [p for p in model.last_shared_layer.parameters() if p.requires_grad]
        if self._sums is None:
            rows, size = self.num_tasks, sum(p.numel() for p in shared)
            self._sums = shared[0].new_zeros(rows * size + rows)
            self._grad_sum = self._sums[: rows * size].view(rows, size)
            self._loss_sum = self._sums[rows * size :]
        weights = self._weights.detach().tolist()
        feature_grads: list[torch.Tensor | None] = [None] * len(features)
        for k, (task, loss) in enumerate(zip(self.task_names, losses)):
            coef = scale * weights[k]
            head_params = [p for p in model.task_parameters(task) if p.requires_grad]
            grads = torch.autograd.grad(loss, [*head_inputs, *head_params], allow_unused=True)
            task_feature_grads, param_grads = grads[: len(head_inputs)], grads[len(head_inputs) :]
            for p, g in zip(head_params, param_grads):
                if g is not None:
                    # Product then sum, not add_(alpha=): a fused multiply-add rounds differently, and
                    # accumulated micro-batches must round as gradients summed over ranks do.
                    p.grad = g * coef if p.grad is None else p.grad.add_(g * coef)
            for i, g in enumerate(task_feature_grads):
                if g is not None:
                    summed = feature_grads[i]
                    feature_grads[i] = g * coef if summed is None else summed.add_(g, alpha=coef)
            if task_feature_grads[-1] is not None:
                self._accumulate_shared_grad(k, features[-1], task_feature_grads[-1], shared, scale)
            self._loss_sum[k] += loss.detach().to(self._loss_sum)
        used = [i for i, g in enumerate(feature_grads) if g is not None]
        torch.autograd.backward(
            [features[i] for i in used], grad_tensors=[feature_grads[i] for i in used]
        )
        self._scale_sum += scale
        self._micro_batches += 1

    def _accumulate_shared_grad(
        self,
        k: int,
        output: torch.Tensor,
        output_grad: torch.Tensor,
        shared: list[nn.Parameter],
        scale: float,
    ) -> None:
        """Add ``scale * grad_W L_k`` (a vector-Jacobian product through W's block) to row k."""
        grads = torch.autograd.grad(
            output, shared, grad_outputs=output_grad, retain_graph=True, allow_unused=True
        )
        offset = 0
        for p, g in zip(shared, grads):
            if g is not None:
                self._grad_sum[k, offset : offset + p.numel()].add_(g.flatten(), alpha=scale)
            offset += p.numel()

    def step(self, comm: Comm) -> None:
        if self._micro_batches == 0:
            raise RuntimeError("GradNormBalancer.step() called without backward() since the last step")
        k = self.num_tasks
        self._grad_sum.div_(self._scale_sum)
        self._loss_sum.div_(self._micro_batches)
        means = comm.all_reduce_mean(self._sums)
        stats = torch.cat([means[:-k].view(k, -1).norm(dim=1), means[-k:]]).to("cpu", torch.float64)
        self._sums.zero_()
        self._scale_sum = 0.0
        self._micro_batches = 0
        if not torch.isfinite(stats).all():
            return
        grad_norms, losses = stats[:k], stats[k:]
        self.last_grad_norms = grad_norms
        if self._initial_losses is None:
            self._initial_losses = losses
        self._weights.grad = gradnorm_weight_grad(
            self._weights.detach(), grad_norms, losses, self._initial_losses, self.alpha
        )
        self._optimizer.step()
        with torch.no_grad():
            self._weights.clamp_(min=MIN_WEIGHT)
            self._weights.mul_(k / self._weights.sum())

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self._weights.detach().clone(),
            "initial_losses": None if self._initial_losses is None else self._initial_losses.clone(),
            "optimizer": copy.deepcopy(self._optimizer.state_dict()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self._weights.copy_(state["weights"])
        initial = state["initial_losses"]
        self._initial_losses = None if initial is None else initial.to(torch.float64).clone()
        self._optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
