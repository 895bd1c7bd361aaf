"""MT-CooL (our reconstruction): the invariants of its alternating updates and its flat-minima search.

Worker-count equivalence (2 Ray workers × 8 = 1 worker × 2 accumulated chunks of 8) is covered for every balancer,
MT-CooL included, by ``tests/train/test_distributed.py``; resuming by ``tests/train/test_resume.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.balancers import balancer_class, build_balancer, check_methods
from pipeline.balancers.base import TrainStep
from pipeline.balancers.mtcool import parameters_perturbed, perturb_per_image
from pipeline.bench.balancers import fixed_batches
from pipeline.errors import ConfigError
from pipeline.models import SSCResNet34
from pipeline.models.cooperative import statistics_frozen
from pipeline.runtime.comm import LocalComm
from pipeline.runtime.compute_format import ComputeFormat
from pipeline.tasks import build_tasks
from tests.conftest import tiny_params

CPU = torch.device("cpu")
SCOPES = ["features", "others", "own", "all"]


def _params(**mtcool):
    return tiny_params(model={"dropout": 0.0}, balancer={"mtcool": mtcool})


class Run:
    """A freshly seeded network of ``method``, its balancer and an optimiser with one group per balancer group."""

    def __init__(self, method: str, params, optimizer: str = "adam", lr: float = 1e-3):
        self.params, self.tasks = params, build_tasks(params)
        torch.manual_seed(params.seed)
        self.model = balancer_class(method).build_network(params, self.tasks).train()
        self.balancer = build_balancer(method, [t.name for t in self.tasks], params)
        groups = [{"params": g} for g in self.balancer.parameter_groups(self.model)]
        self.optimizer = torch.optim.Adam(groups, lr=lr) if optimizer == "adam" else torch.optim.SGD(groups, lr=lr)
        self.batches = fixed_batches(self.tasks, 2, 4, params.data.image_size, params.data.channels, CPU)

    def step(self, i: int = 0) -> torch.Tensor:
        return self.balancer.train_step(
            TrainStep(
                self.model,
                self.optimizer,
                self.tasks,
                [t.loss_fn() for t in self.tasks],
                [self.batches[i % 2]],
                lambda micro: None,
                ComputeFormat("off", False, CPU),
                LocalComm(),
            )
        )

    def task_state(self, task: str) -> dict[str, torch.Tensor]:
        """Task ``task``'s parameters, their Adam state and its network's buffers, cloned."""
        params = self.model.task_parameters(task)
        state = {f"param{i}": p.detach().clone() for i, p in enumerate(params)}
        for i, p in enumerate(params):
            for key, value in self.optimizer.state.get(p, {}).items():
                state[f"adam{i}.{key}"] = torch.as_tensor(value).clone()
        state |= {f"buffer.{n}": b.clone() for n, b in self.model.networks[task].named_buffers()}
        return state


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_with_rho_0_and_no_fusion_it_trains_exactly_as_stl():
    stl = Run("stl", _params())
    mtcool = Run("mtcool", _params(rho=0.0, fusion="none"))
    for i in range(3):
        torch.testing.assert_close(mtcool.step(i), stl.step(i), rtol=0, atol=0)
    stl_weights = dict(stl.model.named_parameters())
    assert dict(mtcool.model.named_parameters()).keys() == stl_weights.keys()
    for name, p in mtcool.model.named_parameters():
        assert torch.equal(p, stl_weights[name]), name


def test_concat_fusion_starts_from_stls_networks_and_add_does_not():
    images = fixed_batches(build_tasks(_params()), 1, 4, 32, 1, CPU)[0]["image"]
    outputs = {}
    for fusion in ("none", "concat", "add"):
        run = Run("mtcool", _params(fusion=fusion))
        with torch.no_grad():
            outputs[fusion] = run.model.eval()(images)
    for task, logits in outputs["none"].items():
        torch.testing.assert_close(outputs["concat"][task], logits)
        assert not torch.allclose(outputs["add"][task], logits)


@pytest.mark.parametrize("perturb", SCOPES)
def test_a_task_update_leaves_every_other_network_its_optimiser_state_and_statistics_bit_identical(perturb):
    run = Run("mtcool", _params(rho=0.05, perturb=perturb, fusion="concat"))
    first, second = (t.name for t in run.tasks)
    run.step(0)  # both tasks have Adam state from here on
    before = {task: run.task_state(task) for task in (first, second)}
    after_first_update = {}
    step = run.optimizer.step

    def recording_step(*args, **kwargs):
        result = step(*args, **kwargs)
        if not after_first_update:
            after_first_update.update({task: run.task_state(task) for task in (first, second)})
        return result

    run.optimizer.step = recording_step
    run.step(1)
    _assert_identical(after_first_update[second], before[second])
    assert not torch.equal(after_first_update[first]["param0"], before[first]["param0"])


def test_a_feature_perturbation_has_norm_rho_for_every_image():
    torch.manual_seed(0)
    features = [torch.randn(3, 4, 8, 8), torch.randn(3, 2, 4, 4)]
    ascent = [torch.randn_like(f) for f in features]
    perturbed = perturb_per_image(features, ascent, rho=0.3)
    per_image = torch.stack([(p - f).flatten(1).pow(2).sum(1) for p, f in zip(perturbed, features)]).sum(0).sqrt()
    torch.testing.assert_close(per_image, torch.full((3,), 0.3))


def _fused_loss(run: Run, offers) -> torch.Tensor:
    task, batch = run.tasks[0], run.batches[0]
    with statistics_frozen(run.model):
        return run.tasks[0].loss_fn()(run.model.fused(batch["image"], task.name, offers), batch[task.target])


def test_the_feature_search_does_not_lower_the_tasks_loss_for_small_rho():
    run = Run("mtcool", _params())
    run.step(1)  # concat fusion starts by ignoring the others' features (zero weights): no direction to ascend yet
    # After one Adam step the fusion weights on the others' features are about lr, so a first-order rise of the loss
    # is near float32's resolution of it (with one intra-op thread it rounded away): judge it in float64.
    run.model.double()
    run.batches[0]["image"] = run.batches[0]["image"].double()
    with torch.no_grad(), statistics_frozen(run.model):
        offers = [[f.requires_grad_() for f in run.model.offered(run.batches[0]["image"], run.tasks[1].name)]]
    loss = _fused_loss(run, offers)
    ascent = torch.autograd.grad(loss, offers[0])
    perturbed = _fused_loss(run, [perturb_per_image(offers[0], ascent, rho=1e-2)])
    assert perturbed.item() > loss.item()


def test_a_parameter_perturbation_has_norm_rho_does_not_lower_the_loss_and_is_undone_bit_for_bit():
    run = Run("mtcool", _params())
    own = run.model.task_parameters(run.tasks[0].name)
    saved = [p.detach().clone() for p in own]
    with torch.no_grad(), statistics_frozen(run.model):
        offers = [run.model.offered(run.batches[0]["image"], run.tasks[1].name)]
    loss = _fused_loss(run, offers)
    direction = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, own)])
    with parameters_perturbed(own, direction, rho=1e-3):
        moved = torch.cat([(p - s).reshape(-1) for p, s in zip(own, saved)]).norm()
        assert moved.item() == pytest.approx(1e-3, rel=1e-3)
        assert _fused_loss(run, offers).item() > loss.item()
    for p, s in zip(own, saved):
        assert torch.equal(p, s)


def test_the_gradient_is_taken_at_the_perturbed_point_and_applied_at_the_unperturbed_one():
    rho, lr = 0.05, 0.1
    run = Run("mtcool", _params(rho=rho, perturb="own"), optimizer="sgd", lr=lr)
    task = run.tasks[0]
    reference = copy.deepcopy(run.model)  # the first task goes first: it sees the step's starting point
    own = reference.task_parameters(task.name)
    start = [p.detach().clone() for p in own]
    with torch.no_grad(), statistics_frozen(reference):
        offers = [reference.offered(run.batches[0]["image"], run.tasks[1].name)]
    batch = run.batches[0]

    def loss() -> torch.Tensor:
        with statistics_frozen(reference):
            return task.loss_fn()(reference.fused(batch["image"], task.name, offers), batch[task.target])

    ascent = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss(), own)])
    with parameters_perturbed(own, ascent, rho):
        at_perturbed = torch.autograd.grad(loss(), own)

    run.step(0)
    for p, p0, g in zip(run.model.task_parameters(task.name), start, at_perturbed):
        torch.testing.assert_close(p.detach(), p0 - lr * g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("perturb", SCOPES)
def test_the_search_records_batchnorm_statistics_once_per_batch_as_a_plain_step_does(perturb):
    searched = Run("mtcool", _params(rho=0.05, perturb=perturb, order="jacobi"))
    plain = Run("mtcool", _params(rho=0.0, order="jacobi"))
    searched.step(0)
    plain.step(0)
    buffers = dict(plain.model.named_buffers())
    assert any("running_mean" in name for name in buffers), "no BatchNorm: the test proves nothing"
    for name, value in searched.model.named_buffers():
        assert torch.equal(value, buffers[name]), name


def test_gauss_seidel_lets_later_tasks_see_the_earlier_update_and_jacobi_does_not():
    runs = {order: Run("mtcool", _params(order=order)) for order in ("gauss_seidel", "jacobi")}
    for run in runs.values():
        run.step(0)
    first, second = (t.name for t in runs["jacobi"].tasks)
    for a, b in zip(runs["gauss_seidel"].model.task_parameters(first), runs["jacobi"].model.task_parameters(first)):
        assert torch.equal(a, b)  # the first task sees the step's start in both
    assert not all(
        torch.equal(a, b)
        for a, b in zip(
            runs["gauss_seidel"].model.task_parameters(second), runs["jacobi"].model.task_parameters(second)
        )
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"balancer": {"mtcool": {"rho": -0.1}}}, r"balancer\.mtcool\.rho"),
        ({"balancer": {"mtcool": {"perturb": "weights"}}}, r"balancer\.mtcool\.perturb.*features.*others.*own.*all"),
        ({"balancer": {"mtcool": {"fusion": "multiply"}}}, r"balancer\.mtcool\.fusion.*concat.*add.*none"),
        ({"balancer": {"mtcool": {"fusion": "none"}}}, r"balancer\.mtcool\.perturb = 'features'.*nothing"),
        ({"train": {"amp": "fp16"}}, r"balancer\.mtcool: train\.amp = 'fp16'"),
    ],
)
def test_bad_mtcool_settings_are_one_line_errors_before_training(overrides, message):
    params = tiny_params(train={"balancers": ["mtcool"], **overrides.pop("train", {})}, **overrides)
    with pytest.raises(ConfigError, match=message) as error:
        check_methods(params)
    assert "\n" not in str(error.value)


def test_a_fusion_the_backbone_cannot_provide_is_a_one_line_error_before_training(monkeypatch):
    monkeypatch.setattr(SSCResNet34, "fusion_layers", {"bottleneck": ("encoder.layer4",)})
    params = tiny_params(train={"balancers": ["mtcool"]}, balancer={"mtcool": {"fusion_at": "every_scale"}})
    with pytest.raises(ConfigError, match=r"fusion_at = 'every_scale': model ssc_resnet34 offers \['bottleneck'\]"):
        check_methods(params)
