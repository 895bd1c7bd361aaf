"""GradNorm: the one-backward implementation equals the textbook one with a backward per task."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from pipeline.balancers import GradNormBalancer, gradnorm_weight_grad
from pipeline.models import AttentionUNetMTL, SSCResNet34
from pipeline.runtime.comm import LocalComm
from pipeline.tasks import Task

ALPHA = 1.5
LR = 0.025
SEG = Task("lesion", "binary_segmentation", "mask", 1)
TISSUE = Task("tissue", "multiclass_segmentation", "mask", 4)
CLS = Task("diagnosis", "classification", "label", 2)


def tiny_attention_unet() -> AttentionUNetMTL:
    return AttentionUNetMTL([SEG, TISSUE, CLS], dropout=0.0, channels=(4, 8, 16), strides=(2, 2))


def tiny_ssc_resnet() -> SSCResNet34:
    return SSCResNet34([SEG, CLS], dropout=0.0)


# image size per model: ResNet-34's layer4 needs more than 1x1 pixels per image, or its BatchNorm
# (over 2 values) makes every gradient at W pure rounding noise
MODELS = {"attention_unet_k3": (tiny_attention_unet, 32), "ssc_resnet34_k2": (tiny_ssc_resnet, 64)}


def make_batches(
    tasks: list[Task], n: int, seed: int, size: int = 32, dtype: torch.dtype = torch.float32
) -> list[tuple[torch.Tensor, dict]]:
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        x = torch.randn(2, 1, size, size, generator=g, dtype=dtype)
        targets = {
            t.name: torch.randint(0, t.out_channels, (2,), generator=g)
            if not t.is_segmentation
            else torch.randint(0, max(t.out_channels, 2), (2, size, size), generator=g)
            for t in tasks
        }
        batches.append((x, targets))
    return batches


def task_losses(tasks, outputs, targets) -> list[torch.Tensor]:
    return [t.loss_fn()(outputs[t.name], targets[t.name]) for t in tasks]


def tasks_of(model) -> list[Task]:
    by_name = {t.name: t for t in (SEG, TISSUE, CLS)}
    return [by_name[n] for n in model.task_names]


def efficient_micro_batch(balancer, model, batch, scale) -> None:
    """The training loop's calls for one micro-batch."""
    x, targets = batch
    features = model.encode(x)
    head_inputs = balancer.head_inputs(features)
    losses = task_losses(tasks_of(model), model.decode(head_inputs), targets)
    balancer.backward(losses, model, features, head_inputs, scale)


def slow_norms_and_losses(model, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """||grad_W L_k|| of the step's mean loss with one full backward per task and micro-batch."""
    shared = list(model.last_shared_layer.parameters())
    grad_sum, loss_sum = 0.0, 0.0
    for x, targets in batches:
        outputs = model(x)
        losses = task_losses(tasks_of(model), outputs, targets)
        per_task = torch.stack(
            [torch.cat([g.flatten() for g in torch.autograd.grad(loss, shared, retain_graph=True)]) for loss in losses]
        )
        grad_sum = grad_sum + per_task
        loss_sum = loss_sum + torch.stack(losses).detach()
    norms = (grad_sum / len(batches)).norm(dim=1)
    return norms.double(), (loss_sum / len(batches)).double()


def reference_weight_grad(weights, norms, losses, initial_losses) -> torch.Tensor:
    """dL_grad/dw by autograd on the GradNorm loss as written in Chen et al. 2018."""
    w = weights.clone().requires_grad_()
    g = w * norms
    ratio = losses / initial_losses
    target = (g.mean() * (ratio / ratio.mean()) ** ALPHA).detach()
    (g - target).abs().sum().backward()
    return w.grad


def reference_update(weights, grad, optimizer_state) -> tuple[torch.Tensor, dict]:
    """Adam on the weights, clamp at 1e-3, rescale to sum K."""
    w = weights.clone().requires_grad_()
    opt = torch.optim.Adam([w], lr=LR)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    w.grad = grad
    opt.step()
    with torch.no_grad():
        w.clamp_(min=1e-3)
        w.mul_(len(w) / w.sum())
    return w.detach(), copy.deepcopy(opt.state_dict())


def test_weight_gradient_formula_matches_autograd():
    weights = torch.tensor([0.5, 1.7, 0.8], dtype=torch.float64)
    norms = torch.tensor([2.0, 0.3, 1.1], dtype=torch.float64)
    losses = torch.tensor([0.9, 0.4, 1.3], dtype=torch.float64)
    initial = torch.tensor([1.0, 0.8, 1.5], dtype=torch.float64)
    got = gradnorm_weight_grad(weights, norms, losses, initial, ALPHA)
    expected = reference_weight_grad(weights, norms, losses, initial)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("make_model", "size"), MODELS.values(), ids=MODELS.keys())
def test_efficient_step_matches_per_task_backward_reference(make_model, size):
    torch.manual_seed(0)
    model = make_model()
    balancer = GradNormBalancer(model.task_names, alpha=ALPHA, lr=LR)
    steps = [make_batches(tasks_of(model), 2, seed, size) for seed in range(3)]
    scales = [0.25, 0.25]  # the loop's gradient scale does not change what GradNorm measures
    weights = torch.ones(len(model.task_names), dtype=torch.float64)
    initial_losses, opt_state = None, None
    for batches in steps:
        norms, losses = slow_norms_and_losses(model, batches)
        initial_losses = losses if initial_losses is None else initial_losses
        expected_grad = reference_weight_grad(weights, norms, losses, initial_losses)
        expected_weights, opt_state = reference_update(weights, expected_grad, opt_state)

        torch.testing.assert_close(balancer.weights(), weights)
        for batch, scale in zip(batches, scales):
            efficient_micro_batch(balancer, model, batch, scale)
        model.zero_grad()
        balancer.step(LocalComm())

        torch.testing.assert_close(balancer.last_grad_norms, norms, rtol=1e-5, atol=1e-8)
        got_grad = gradnorm_weight_grad(weights, balancer.last_grad_norms, losses, initial_losses, ALPHA)
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(balancer.weights(), expected_weights, rtol=1e-5, atol=1e-7)
        assert balancer.weights().sum().item() == pytest.approx(len(model.task_names))
        weights = expected_weights
    assert not torch.allclose(weights, torch.ones_like(weights))


@pytest.mark.parametrize(("make_model", "size"), MODELS.values(), ids=MODELS.keys())
def test_accumulated_parameter_gradients_equal_weighted_sum_backward(make_model, size):
    # float64: random-init BatchNorm over few values amplifies rounding, and the two paths round
    # differently (weights applied after vs before the head backward)
    torch.manual_seed(1)
    model = make_model().double()
    balancer = GradNormBalancer(model.task_names, alpha=ALPHA, lr=0.3)
    for seed in (10, 11):
        batch = make_batches(tasks_of(model), 1, seed, size, torch.float64)[0]
        efficient_micro_batch(balancer, model, batch, 1.0)
        balancer.step(LocalComm())
    model.zero_grad()
    weights = balancer.weights()
    assert (weights - 1).abs().max() > 0.05

    batches = make_batches(tasks_of(model), 2, 12, size, torch.float64)
    for batch in batches:
        efficient_micro_batch(balancer, model, batch, 0.5)
    efficient = {name: p.grad.clone() for name, p in model.named_parameters()}

    model.zero_grad()
    for x, targets in batches:
        losses = torch.stack(task_losses(tasks_of(model), model(x), targets))
        (0.5 * (weights * losses).sum()).backward()
    for name, p in model.named_parameters():
        error = (efficient[name] - p.grad).abs().max()
        assert error <= 1e-5 * p.grad.abs().max() + 1e-12, f"{name}: max error {error:.2e}"


class _PairComm:
    """Two ranks in two threads: all_reduce_mean averages what both pass in."""

    def __init__(self, rank: int, slots: list, barrier: threading.Barrier):
        self.rank, self.world_size, self._slots, self._barrier = rank, 2, slots, barrier

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        self._slots[self.rank] = tensor.clone()
        self._barrier.wait()
        mean = (self._slots[0] + self._slots[1]) / 2
        self._barrier.wait()
        return mean


def test_two_ranks_hold_identical_weights_equal_to_gradient_accumulation():
    torch.manual_seed(2)
    model = tiny_attention_unet()
    steps = [make_batches(tasks_of(model), 2, seed) for seed in (20, 21, 22)]

    single = GradNormBalancer(model.task_names)
    single_model = copy.deepcopy(model)
    expected = []
    for batches in steps:
        for batch in batches:
            efficient_micro_batch(single, single_model, batch, 0.5)
        single.step(LocalComm())
        expected.append(single.weights())

    slots, barrier = [None, None], threading.Barrier(2)
    results: dict[int, list[torch.Tensor]] = {}

    def rank_main(rank: int) -> None:
        balancer, rank_model = GradNormBalancer(model.task_names), copy.deepcopy(model)
        comm = _PairComm(rank, slots, barrier)
        results[rank] = []
        for batches in steps:
            efficient_micro_batch(balancer, rank_model, batches[rank], 1.0)
            balancer.step(comm)
            results[rank].append(balancer.weights())

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w0, w1, w in zip(results[0], results[1], expected):
        torch.testing.assert_close(w0, w1, rtol=0, atol=0)
        torch.testing.assert_close(w0, w, rtol=1e-6, atol=1e-7)


def test_non_finite_step_leaves_weights_unchanged():
    torch.manual_seed(3)
    model = tiny_attention_unet()
    balancer = GradNormBalancer(model.task_names)
    efficient_micro_batch(balancer, model, make_batches(tasks_of(model), 1, seed=30)[0], 1.0)
    balancer.step(LocalComm())
    before = balancer.weights()
    x, targets = make_batches(tasks_of(model), 1, seed=31)[0]
    efficient_micro_batch(balancer, model, (torch.full_like(x, float("nan")), targets), 1.0)
    balancer.step(LocalComm())
    torch.testing.assert_close(balancer.weights(), before, rtol=0, atol=0)


def test_fp16_task_gradients_at_w_match_float32_where_unscaled_half_precision_underflows():
    # 256 px, mean-reduced Dice + BCE: per-pixel gradients of ~1e-6, below fp16's normal range. The loss
    # scale must be applied before the heads' and W's half-precision backward passes, not multiplied in after.
    from pipeline.balancers.base import forward_backward
    from pipeline.runtime.compute_format import ComputeFormat

    torch.manual_seed(0)
    tasks = (SEG, CLS)
    model = AttentionUNetMTL(list(tasks), dropout=0.0, channels=(4, 8, 16), strides=(2, 2))
    g = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(2, 1, 256, 256, generator=g),
        "mask": (torch.rand(2, 256, 256, generator=g) > 0.7).long(),
        "label": torch.tensor([0, 1]),
    }

    def grad_norms_at_w(amp: str, scale: float) -> torch.Tensor:
        balancer = GradNormBalancer(model.task_names)
        compute = ComputeFormat(amp, False, torch.device("cpu"))
        forward_backward(copy.deepcopy(model), balancer, tasks, [t.loss_fn() for t in tasks], batch, scale, compute)
        balancer.step(LocalComm())
        return balancer.last_grad_norms

    reference = grad_norms_at_w("off", 1.0)
    scaled = grad_norms_at_w("fp16", 2.0**16)
    unscaled = grad_norms_at_w("fp16", 1.0)
    torch.testing.assert_close(scaled, reference, rtol=0.02, atol=0.0)
    assert ((unscaled - reference).abs() / reference).max() > 0.2  # the size where unscaled fp16 underflows


def test_a_step_the_optimiser_skipped_leaves_weights_adam_state_and_initial_losses_untouched():
    torch.manual_seed(4)
    model = tiny_attention_unet()
    balancer = GradNormBalancer(model.task_names)
    batches = make_batches(tasks_of(model), 3, seed=40)
    efficient_micro_batch(balancer, model, batches[0], 1.0)
    balancer.step(LocalComm(), skipped=torch.tensor(True))  # a skipped first step: L(0) is not taken from it
    assert balancer.state_dict()["initial_losses"] is None
    torch.testing.assert_close(balancer.weights(), torch.ones(3, dtype=torch.float64), rtol=0, atol=0)

    efficient_micro_batch(balancer, model, batches[1], 1.0)
    balancer.step(LocalComm(), skipped=torch.tensor(False))
    before = copy.deepcopy(balancer.state_dict())
    efficient_micro_batch(balancer, model, batches[2], 1.0)
    balancer.step(LocalComm(), skipped=torch.tensor(True))
    after = balancer.state_dict()
    torch.testing.assert_close(after["weights"], before["weights"], rtol=0, atol=0)
    torch.testing.assert_close(after["initial_losses"], before["initial_losses"], rtol=0, atol=0)
    for key, value in before["optimizer"]["state"][0].items():
        torch.testing.assert_close(after["optimizer"]["state"][0][key], value, rtol=0, atol=0, msg=key)
    efficient_micro_batch(balancer, model, batches[2], 1.0)
    balancer.step(LocalComm(), skipped=torch.tensor(False))
    assert not torch.equal(balancer.weights(), before["weights"])  # the same step, not skipped, moves them
