"""Every balancer: build by name, train-loop protocol, and resume from a checkpoint."""

from __future__ import annotations

import io

import pytest
import torch

from pipeline.balancers import UncertaintyBalancer, balancer_classes, build_balancer
from pipeline.config import DEFAULT_BALANCERS, parse_params
from pipeline.errors import ConfigError
from pipeline.models import AttentionUNetMTL
from pipeline.runtime.comm import LocalComm
from pipeline.tasks import Task

TASKS = [Task("lesion", "binary_segmentation", "mask", 1), Task("diagnosis", "classification", "label", 2)]
NAMES = [t.name for t in TASKS]


def make_model() -> AttentionUNetMTL:
    torch.manual_seed(0)
    return AttentionUNetMTL(TASKS, dropout=0.0, channels=(4, 8, 16), strides=(2, 2))


def batch(seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 32, 32, generator=g) * (1 + seed % 3)
    lesion = torch.randint(0, 2, (2, 32, 32), generator=g)
    return x, {"lesion": lesion, "diagnosis": torch.randint(0, 2, (2,), generator=g)}


def run_epochs(balancer, model, epochs: range, steps_per_epoch: int = 2) -> list[torch.Tensor]:
    """The training loop's balancer calls (the model itself is not updated); weights after each step."""
    extra_params = balancer.parameters()
    sgd = torch.optim.SGD(extra_params, lr=0.5) if extra_params else None
    trajectory = []
    for epoch in epochs:
        epoch_losses = torch.zeros(len(TASKS))
        for step in range(steps_per_epoch):
            x, targets = batch(100 * epoch + step)
            features = model.encode(x)
            head_inputs = balancer.head_inputs(features)
            outputs = model.decode(head_inputs)
            losses = [t.loss_fn()(outputs[t.name], targets[t.name]) for t in TASKS]
            balancer.backward(losses, model, features, head_inputs, scale=1.0)
            balancer.step(LocalComm())
            if sgd:
                sgd.step()
                sgd.zero_grad()
            model.zero_grad()
            epoch_losses += torch.stack(losses).detach() / steps_per_epoch
            trajectory.append(balancer.weights())
        balancer.end_epoch(epoch_losses)
    return trajectory


def checkpoint(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_every_balancer_file_registers_its_balancer_and_the_default_trains_them_all():
    assert (
        set(balancer_classes())
        == set(DEFAULT_BALANCERS)
        == {"equal", "uncertainty", "gradnorm", "dwa", "atdwa", "stl", "mtcool"}
    )


def test_unknown_balancer_is_a_config_error_listing_the_choices():
    with pytest.raises(ConfigError, match="'pcgrad'.*atdwa.*dwa.*equal.*gradnorm.*uncertainty"):
        build_balancer("pcgrad", NAMES, parse_params({}))


def test_build_balancer_reads_its_params_section():
    params = parse_params(
        {
            "balancer": {
                "dwa": {"temperature": 3.0},
                "atdwa": {"t0": 1.5, "gamma": 0.0},
                "gradnorm": {"alpha": 0.5, "lr": 0.1},
            }
        }
    )
    assert build_balancer("dwa", NAMES, params).temperature() == 3.0
    assert build_balancer("atdwa", NAMES, params).temperature() == 1.5
    gradnorm = build_balancer("gradnorm", NAMES, params)
    assert gradnorm.alpha == 0.5
    assert build_balancer("equal", NAMES, params).temperature() is None


@pytest.mark.parametrize("name", sorted(balancer_classes()))
def test_resumed_balancer_continues_identically(name):
    model = make_model()
    original = build_balancer(name, NAMES, parse_params({}))
    run_epochs(original, model, range(3))
    state = original.state_dict()
    continued = run_epochs(original, model, range(3, 6))

    resumed = build_balancer(name, NAMES, parse_params({}))
    resumed.load_state_dict(checkpoint(state))  # written after training went on: no aliasing
    replayed = run_epochs(resumed, model, range(3, 6))

    for expected, got in zip(continued, replayed):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    if name not in ("equal", "stl", "mtcool"):  # fixed weights of 1
        unit = torch.ones(len(NAMES), dtype=torch.float64)
        assert not torch.allclose(continued[-1], unit), "weights never moved: the test proves nothing"
    if name != "uncertainty":
        assert continued[-1].sum().item() == pytest.approx(len(NAMES))


def test_uncertainty_loss_and_weights():
    balancer = UncertaintyBalancer(NAMES)
    with torch.no_grad():
        balancer.log_variances.copy_(torch.tensor([0.0, 1.0]))
    losses = torch.tensor([2.0, 3.0])
    assert balancer.combine(losses).item() == pytest.approx(2.0 + 3.0 * torch.e**-1 + 1.0)
    assert balancer.weights().tolist() == pytest.approx([1.0, torch.e**-1])
    balancer.combine(losses).backward()
    # d/ds_k (exp(-s_k) L_k + s_k) = 1 - exp(-s_k) L_k: the task with the larger loss raises its s
    assert balancer.log_variances.grad.tolist() == pytest.approx([1 - 2.0, 1 - 3.0 * torch.e**-1])
