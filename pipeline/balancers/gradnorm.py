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
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import Field
from torch import nn

from pipeline.balancers.base import Balancer
from pipeline.config import MethodSettings, Params
from pipeline.models.base import MultiTaskModel
from pipeline.runtime.comm import Comm

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


class GradNormSettings(MethodSettings):
    alpha: float = Field(1.5, ge=0.0, description="restoring-force exponent")
    lr: float | None = Field(
        None, gt=0.0, description="learning rate of the task-weight Adam; null = train.lr (as LibMTL)"
    )


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
    at least ``1e-3`` and rescales them to sum to K. The first valid step's losses become ``L(0)``.
    A step whose losses or gradient norms are not finite, or that the optimiser skipped, leaves the
    weights unchanged. :attr:`last_grad_norms` holds the last step's ``||grad_W L_k||`` ``(K,)``
    (float64, on the balancer's device, not finite after an overflow; None before the first) for logging.

    Under fp16 each task's loss is multiplied by ``scale`` (which carries the loss scale) before it is
    differentiated, so the heads' and W's half-precision backward passes see scaled gradients; the
    per-task gradients at W are unscaled in :meth:`step` by the sum of the micro-batches' scales.

    The heads' computation graphs must be disjoint (true when they share no parameters and no
    operations): each is released after its own task's gradient. Head-parameter gradients are
    written to ``.grad`` directly, not through autograd's accumulation hooks.
    """

    name = "gradnorm"
    settings_model = GradNormSettings

    def __init__(self, task_names: Sequence[str], alpha: float = 1.5, lr: float = 0.025):
        super().__init__(task_names)
        self.alpha = alpha
        self.lr = lr
        self._weights = nn.Parameter(torch.ones(self.num_tasks, dtype=torch.float64))
        self._optimizer = self._new_optimizer()
        self._initial_losses = torch.full((self.num_tasks,), math.nan, dtype=torch.float64)  # L(0); nan before
        self._has_initial = torch.zeros((), dtype=torch.bool)
        self.last_grad_norms: torch.Tensor | None = None
        self._buffers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # see _accumulators()
        self._scale_sum: float | torch.Tensor = 0.0
        self._micro_batches = 0

    def _new_optimizer(self) -> torch.optim.Adam:
        """Adam over the weights; on an accelerator ``capturable``, so its step count stays on the device
        and a step reads nothing back to the host."""
        return torch.optim.Adam([self._weights], lr=self.lr, capturable=self._weights.device.type == "cuda")

    def to(self, device: torch.device | str) -> GradNormBalancer:
        """Move the weights, L(0) and the weights' optimiser to ``device``; call before the first step."""
        super().to(device)
        if self._optimizer.state:
            raise RuntimeError("GradNormBalancer.to() after the first step: its optimiser state would stay behind")
        self._weights = nn.Parameter(self._weights.detach().to(self.device))
        self._initial_losses = self._initial_losses.to(self.device)
        self._has_initial = self._has_initial.to(self.device)
        self._optimizer = self._new_optimizer()
        return self

    @classmethod
    def from_params(cls, task_names: Sequence[str], params: Params) -> GradNormBalancer:
        g = GradNormSettings.of(params, cls.name)
        return cls(task_names, alpha=g.alpha, lr=g.lr if g.lr is not None else params.train.lr)

    def weights(self) -> torch.Tensor:
        return self._weights.detach().clone()

    def directly_written_parameters(self, model: MultiTaskModel) -> list[nn.Parameter]:
        """The heads' parameters: :meth:`backward` writes their gradients itself."""
        return [p for task in self.task_names for p in model.task_parameters(task) if p.requires_grad]

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
        scale: float | torch.Tensor = 1.0,
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
        if self._buffers is None:
            k = self.num_tasks
            sums = shared[0].new_zeros(k * sum(p.numel() for p in shared) + k)
            self._buffers = (sums, sums[:-k].view(k, -1), sums[-k:])
        _, grad_sum, loss_sum = self._accumulators()
        weights = self._weights.detach().to(loss_sum.dtype)  # (K,) on the device: no host read per micro-batch
        feature_grads: list[torch.Tensor | None] = [None] * len(features)
        for k, (task, loss) in enumerate(zip(self.task_names, losses)):
            head_params = [p for p in model.task_parameters(task) if p.requires_grad]
            # differentiate the scaled loss: under fp16 the heads' and W's backward run in half precision,
            # where the unscaled per-pixel gradients (~1e-6 at 256 px) would underflow
            grads = torch.autograd.grad(loss * scale, [*head_inputs, *head_params], allow_unused=True)
            task_feature_grads, param_grads = grads[: len(head_inputs)], grads[len(head_inputs) :]
            coef = weights[k]
            for p, g in zip(head_params, param_grads):
                if g is not None:
                    # Product then sum, not add_(alpha=): a fused multiply-add rounds differently, and
                    # accumulated micro-batches must round as gradients summed over ranks do.
                    p.grad = g * coef if p.grad is None else p.grad.add_(g * coef)
            for i, g in enumerate(task_feature_grads):
                if g is not None:
                    summed = feature_grads[i]
                    feature_grads[i] = g * coef if summed is None else summed.add_(g * coef)
            if task_feature_grads[-1] is not None:
                self._accumulate_shared_grad(grad_sum[k], features[-1], task_feature_grads[-1], shared)
            loss_sum[k] += loss.detach().to(loss_sum)
        used = [i for i, g in enumerate(feature_grads) if g is not None]
        torch.autograd.backward([features[i] for i in used], grad_tensors=[feature_grads[i] for i in used])
        self._scale_sum = self._scale_sum + scale
        self._micro_batches += 1

    def _accumulators(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's buffer ``(K * P + K,)`` and its two views: ``(K, P)`` the sum of ``scale * grad_W L_k`` and
        ``(K,)`` the sum of the micro-batch losses (allocated by the first :meth:`backward`)."""
        if self._buffers is None:
            raise RuntimeError("GradNormBalancer: no backward() since it was built")
        return self._buffers

    def _accumulate_shared_grad(
        self,
        row: torch.Tensor,
        output: torch.Tensor,
        output_grad: torch.Tensor,
        shared: list[nn.Parameter],
    ) -> None:
        """Add ``scale * grad_W L_k`` (a vector-Jacobian product through W's block; ``output_grad`` carries
        the scale) to ``row`` ``(P,)``, task k's row of the accumulation buffer, in its float32."""
        grads = torch.autograd.grad(output, shared, grad_outputs=output_grad, retain_graph=True, allow_unused=True)
        offset = 0
        for p, g in zip(shared, grads):
            if g is not None:
                row[offset : offset + p.numel()].add_(g.flatten())
            offset += p.numel()

    def step(self, comm: Comm, skipped: torch.Tensor | None = None) -> None:
        """Update the weights from the step's all-reduced task gradients at W and losses, on the device.

        The update is kept only where it is valid: a step whose gradient norms or losses are not finite,
        or that the optimiser skipped (``skipped``), leaves the weights, their Adam state and L(0)
        exactly as they were. The choice is made on the device (``torch.where``), never read back.
        """
        if self._micro_batches == 0:
            raise RuntimeError("GradNormBalancer.step() called without backward() since the last step")
        k = self.num_tasks
        sums, grad_sum, loss_sum = self._accumulators()
        grad_sum.div_(self._scale_sum)  # unscales: the sum of the micro-batches' scales
        loss_sum.div_(self._micro_batches)
        means = comm.all_reduce_mean(sums)
        stats = torch.cat([means[:-k].view(k, -1).norm(dim=1), means[-k:]]).to(torch.float64)
        sums.zero_()
        self._scale_sum = 0.0
        self._micro_batches = 0
        valid = torch.isfinite(stats).all()
        if skipped is not None:
            valid = valid & ~skipped
        grad_norms, losses = stats[:k], stats[k:]
        self.last_grad_norms = grad_norms
        initial = torch.where(self._has_initial, self._initial_losses, losses)
        self._weights.grad = gradnorm_weight_grad(self._weights.detach(), grad_norms, losses, initial, self.alpha)
        self._keep_if(valid, self._adam_step)
        self._initial_losses = torch.where(valid, initial, self._initial_losses)
        self._has_initial = self._has_initial | valid
        self._weights_changed()

    def _adam_step(self) -> None:
        """Move the weights by Adam, clamp them to at least ``MIN_WEIGHT`` and rescale them to sum to K."""
        self._optimizer.step()
        with torch.no_grad():
            self._weights.clamp_(min=MIN_WEIGHT)
            self._weights.mul_(self.num_tasks / self._weights.sum())

    def _keep_if(self, valid: torch.Tensor, update: Callable[[], None]) -> None:
        """Run ``update`` on the weights and their Adam state, then restore both where ``valid`` is false.

        Adam's state before its first step is all zeros, which is what a first step is undone to. On CUDA
        the optimiser is capturable and every tensor is on the device; elsewhere Adam keeps its step count
        on the host, which is restored through a host read of ``valid`` (free on the CPU).
        """
        state = self._optimizer.state[self._weights]
        before = [self._weights.detach().clone(), *(t.clone() for t in state.values())]
        update()
        after = [self._weights.detach(), *self._optimizer.state[self._weights].values()]
        before += [torch.zeros_like(t) for t in after[len(before) :]]
        with torch.no_grad():
            for now, then in zip(after, before, strict=True):
                now.copy_(torch.where(valid.to(now.device), now, then))

    def state_dict(self) -> dict[str, Any]:
        """Weights, L(0) (None before the first valid step) and the weights' Adam state (read once an epoch)."""
        return {
            "weights": self._weights.detach().clone(),
            "initial_losses": self._initial_losses.clone() if bool(self._has_initial) else None,
            "optimizer": copy.deepcopy(self._optimizer.state_dict()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self._weights.copy_(state["weights"])
        initial = state["initial_losses"]
        self._has_initial = torch.tensor(initial is not None, device=self.device)
        if initial is not None:
            self._initial_losses = initial.to(self.device, torch.float64).clone()
        self._optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self._weights_changed()
