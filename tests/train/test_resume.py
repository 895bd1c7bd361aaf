"""An interrupted run resumed from its checkpoint ends exactly where an uninterrupted run ends."""

import numpy as np
import pytest
import torch

from pipeline.data.folds import load_fold
from pipeline.tasks import build_tasks
from pipeline.train.checkpoint import DirectoryStore
from pipeline.train.loop import Trainer
from tests.conftest import tiny_params


def _trainer(params, balancer, data):
    return Trainer(params, build_tasks(params), balancer, load_fold(data, 0), fold=0)


@pytest.mark.parametrize("balancer", ["atdwa", "gradnorm", "uncertainty", "mtcool"])
def test_resume_gives_identical_history_and_weights(balancer, tiny_data, tmp_path):
    params = tiny_params()
    straight = _trainer(params, balancer, tiny_data)
    full = straight.fit(DirectoryStore(tmp_path / "straight"))

    first = _trainer(params, balancer, tiny_data)
    first.fit(DirectoryStore(tmp_path / "resumed"), stop_after_epochs=2)
    assert len(first.history) == 2
    second = _trainer(params, balancer, tiny_data)  # a fresh process would start exactly like this
    resumed = second.fit(DirectoryStore(tmp_path / "resumed"))

    assert len(resumed.history) == len(full.history) == params.train.epochs
    np.testing.assert_equal(resumed.history, full.history)  # losses, weights, T, lr, val metrics (NaN-aware)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name
    assert straight.balancer.weights().tolist() == second.balancer.weights().tolist()


def test_checkpoint_holds_every_piece_of_state(tiny_data, tmp_path):
    trainer = _trainer(tiny_params(train={"epochs": 1}), "dwa", tiny_data)
    trainer.fit(DirectoryStore(tmp_path))
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "balancer", "early_stopping", "torch_rng", "epoch"} <= set(state)
    assert state["epoch"] == 1


def test_a_checkpoint_of_other_params_is_not_resumed(tiny_data, tmp_path):
    _trainer(tiny_params(train={"epochs": 1}), "equal", tiny_data).fit(DirectoryStore(tmp_path))
    wider = _trainer(tiny_params(train={"epochs": 1}, model={"width": 32}), "equal", tiny_data)
    result = wider.fit(DirectoryStore(tmp_path))  # would fail on mismatched shapes if it resumed
    assert len(result.history) == 1 and result.history[0]["epoch"] == 0
