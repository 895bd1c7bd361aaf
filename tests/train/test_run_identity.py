"""A run's identity (checkpoint fingerprint, Ray Train run name, Tune sweep name) changes exactly with what the
run trains on, so a re-run resumes its own checkpoints and never another run's."""

import pytest

from pipeline.train.identity import ray_run_name, run_identity
from pipeline.tune.tune import sweep_name
from tests.conftest import tiny_params


@pytest.mark.parametrize(
    "change",
    [
        {"balancer": {"atdwa": {"t0": 3.0}}},  # another balancer's settings
        {"train": {"balancers": ["dwa"]}},  # which other balancers are trained
        {"tune": {"grid": {"gamma": [0.1]}}},  # the sweep that picked the settings (already merged into the params)
        {"ray": {"num_workers": 2}},  # where it runs: results do not depend on the worker count
        {"evaluate": {"alpha": 0.01}},
        {"registry": {"min_improvement": 0.1}},
    ],
)
def test_a_training_run_ignores_what_it_does_not_train_on(change):
    assert run_identity(tiny_params(**change), "dwa") == run_identity(tiny_params(), "dwa")
    assert ray_run_name(tiny_params(**change), "dwa", 0) == ray_run_name(tiny_params(), "dwa", 0)


@pytest.mark.parametrize(
    "change",
    [
        {"balancer": {"dwa": {"temperature": 3.0}}},
        {"train": {"lr": 0.01}},
        {"model": {"width": 8}},
        {"seed": 1},
    ],
)
def test_a_training_run_changes_with_what_it_trains_on(change):
    assert run_identity(tiny_params(**change), "dwa") != run_identity(tiny_params(), "dwa")
    assert ray_run_name(tiny_params(**change), "dwa", 0) != ray_run_name(tiny_params(), "dwa", 0)


def test_balancers_and_folds_are_different_runs():
    params = tiny_params()
    assert len({run_identity(params, b) for b in ("equal", "uncertainty", "stl")}) == 3
    assert ray_run_name(params, "dwa", 0) != ray_run_name(params, "dwa", 1)


def test_a_sweep_changes_with_its_grid_and_the_settings_it_does_not_sweep_only():
    assert sweep_name(tiny_params(balancer={"atdwa": {"t0": 3.0}, "dwa": {"temperature": 3.0}})) == sweep_name(
        tiny_params()
    )
    assert sweep_name(tiny_params(tune={"grid": {"gamma": [0.1]}})) != sweep_name(tiny_params())
    gamma_only = {"grid": {"gamma": [0.5]}}  # t0 and window come from balancer.atdwa
    assert sweep_name(tiny_params(tune=gamma_only, balancer={"atdwa": {"t0": 3.0}})) != sweep_name(
        tiny_params(tune=gamma_only)
    )
    assert sweep_name(tiny_params(train={"epochs": 3})) != sweep_name(tiny_params())
