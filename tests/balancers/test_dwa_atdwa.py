"""DWA and ATDWA weights against hand-computed numbers, and their properties."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.balancers import ATDWABalancer, DWABalancer, atdwa_temperature, dwa_weights

TOL = 1e-7  # the hand computations leave out the 1e-8 in the ratio's denominator


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def history(*epochs: list[float]) -> torch.Tensor:
    return torch.tensor(epochs, dtype=torch.float64)


def feed(balancer, epochs):
    for losses in epochs:
        balancer.end_epoch(torch.tensor(losses))


# For K = 2, K * softmax(r / T) = (2 * sigmoid((r0 - r1) / T), 2 * sigmoid((r1 - r0) / T)).


def test_dwa_weights_are_one_until_two_epochs_exist():
    balancer = DWABalancer(["seg", "cls"], temperature=2.0)
    assert balancer.weights().tolist() == [1.0, 1.0]
    feed(balancer, [[1.0, 2.0]])
    assert balancer.weights().tolist() == [1.0, 1.0]


def test_dwa_weights_hand_computed():
    balancer = DWABalancer(["seg", "cls"], temperature=2.0)
    feed(balancer, [[1.0, 2.0], [0.8, 1.0]])
    # r = (0.8 / 1.0, 1.0 / 2.0) = (0.8, 0.5): the task whose loss fell less gets more weight
    expected = [2 * sigmoid(0.15), 2 * sigmoid(-0.15)]
    assert balancer.weights().tolist() == pytest.approx(expected, abs=TOL)
    assert expected == pytest.approx([1.0748596, 0.9251404], abs=TOL)
    feed(balancer, [[0.4, 1.0]])
    # only the last two epochs count: r = (0.5, 1.0)
    assert balancer.weights().tolist() == pytest.approx([2 * sigmoid(-0.25), 2 * sigmoid(0.25)], abs=TOL)


def test_dwa_three_tasks_hand_computed():
    w = dwa_weights(history([1.0, 1.0, 1.0], [0.5, 1.0, 2.0]), temperature=1.0)
    z = math.exp(0.5) + math.exp(1.0) + math.exp(2.0)
    expected = [3 * math.exp(0.5) / z, 3 * math.exp(1.0) / z, 3 * math.exp(2.0) / z]
    assert w.tolist() == pytest.approx(expected, abs=TOL)


def test_dwa_zero_losses_use_eps_in_the_ratio():
    # r_0 = 0 / (0 + 1e-8) = 0, r_1 = 0.5
    w = dwa_weights(history([0.0, 1.0], [0.0, 0.5]), temperature=2.0)
    assert w.tolist() == pytest.approx([2 * sigmoid(-0.25), 2 * sigmoid(0.25)], abs=TOL)
    # r_0 = 1e-9 / (0 + 1e-8) = 0.1, r_1 = 1 / (1 + 1e-8)
    w = dwa_weights(history([0.0, 1.0], [1e-9, 1.0]), temperature=2.0)
    assert w.tolist() == pytest.approx([2 * sigmoid(-0.45), 2 * sigmoid(0.45)], abs=TOL)
    assert torch.isfinite(w).all()


def test_atdwa_temperature_hand_computed():
    h = history([1.0, 2.0], [0.8, 1.0], [0.5, 1.2], [0.5, 1.1])
    assert atdwa_temperature(h[:0], 2.0, 0.8, 3) == 2.0
    assert atdwa_temperature(h[:1], 2.0, 0.8, 3) == 2.0
    # two epochs: population std of (1.0, 0.8) = 0.1, of (2.0, 1.0) = 0.5; mean 0.3
    assert atdwa_temperature(h[:2], 2.0, 0.8, 3) == pytest.approx(2.0 * (1 + 0.8 * 0.3))
    # three epochs: std(1.0, 0.8, 0.5) = sqrt(0.38 / 9), std(2.0, 1.0, 1.2) = sqrt(1.68 / 9)
    u3 = (math.sqrt(0.38 / 9) + math.sqrt(1.68 / 9)) / 2
    assert atdwa_temperature(h[:3], 2.0, 0.8, 3) == pytest.approx(2.0 * (1 + 0.8 * u3))
    assert 2.0 * (1 + 0.8 * u3) == pytest.approx(2.5100239, abs=TOL)
    # four epochs: the window slides to epochs 1..3:
    # std(0.8, 0.5, 0.5) = sqrt(0.02), std(1.0, 1.2, 1.1) = sqrt(0.02 / 3)
    u4 = (math.sqrt(0.02) + math.sqrt(0.02 / 3)) / 2
    assert atdwa_temperature(h, 2.0, 0.8, 3) == pytest.approx(2.0 * (1 + 0.8 * u4))


def test_atdwa_weights_hand_computed():
    balancer = ATDWABalancer(["seg", "cls"], t0=2.0, gamma=0.8, window=3)
    feed(balancer, [[1.0, 2.0]])
    assert balancer.weights().tolist() == [1.0, 1.0]
    assert balancer.temperature() == 2.0
    feed(balancer, [[0.8, 1.0]])
    assert balancer.temperature() == pytest.approx(2.48)
    expected = [2 * sigmoid(0.3 / 2.48), 2 * sigmoid(-0.3 / 2.48)]
    assert balancer.weights().tolist() == pytest.approx(expected, abs=TOL)
    feed(balancer, [[0.5, 1.2]])
    t = 2.0 * (1 + 0.8 * (math.sqrt(0.38 / 9) + math.sqrt(1.68 / 9)) / 2)
    # r = (0.5 / 0.8, 1.2 / 1.0) = (0.625, 1.2)
    expected = [2 * sigmoid(-0.575 / t), 2 * sigmoid(0.575 / t)]
    assert balancer.weights().tolist() == pytest.approx(expected, abs=TOL)


def random_histories():
    g = torch.Generator().manual_seed(0)
    for num_tasks in (2, 3, 4):
        for _ in range(20):
            num_epochs = int(torch.randint(0, 8, (1,), generator=g))
            scale = 10 ** float(torch.empty(1).uniform_(-3, 2, generator=g))
            yield torch.rand(num_epochs, num_tasks, generator=g, dtype=torch.float64) * scale


def test_weights_sum_to_k_and_are_positive():
    for h in random_histories():
        k = h.shape[1]
        for w in (
            dwa_weights(h, 2.0),
            dwa_weights(h, atdwa_temperature(h, 2.0, 0.8, 3)),
            dwa_weights(h, atdwa_temperature(h, 0.5, 5.0, 2)),
        ):
            assert w.shape == (k,)
            assert w.sum().item() == pytest.approx(k, abs=1e-9)
            assert (w > 0).all()


def test_atdwa_with_zero_gamma_is_dwa_with_t0():
    for h in random_histories():
        names = [f"task{k}" for k in range(h.shape[1])]
        dwa, atdwa = DWABalancer(names, temperature=1.7), ATDWABalancer(names, t0=1.7, gamma=0.0, window=3)
        for epoch in h:
            dwa.end_epoch(epoch)
            atdwa.end_epoch(epoch)
            assert atdwa.temperature() == dwa.temperature() == 1.7
            torch.testing.assert_close(atdwa.weights(), dwa.weights(), rtol=0, atol=0)


def test_temperature_grows_with_volatility_and_softens_the_weights():
    last_two = [[1.0, 1.0], [0.7, 1.0]]
    calm = history([1.2, 1.0], *last_two)
    volatile = history([3.0, 4.0], *last_two)
    t_calm, t_volatile = atdwa_temperature(calm, 2.0, 0.8, 3), atdwa_temperature(volatile, 2.0, 0.8, 3)
    assert t_volatile > t_calm > 2.0
    spread = [(dwa_weights(h, t) - 1).abs().max() for h, t in ((calm, t_calm), (volatile, t_volatile))]
    assert spread[1] < spread[0]


def test_end_epoch_rejects_wrong_number_of_losses():
    with pytest.raises(ValueError, match="expected 2 epoch losses"):
        DWABalancer(["seg", "cls"]).end_epoch(torch.ones(3))
