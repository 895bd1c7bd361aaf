"""A balancer is one file: dropped into the balancers package (here a folder added to its ``__path__``), it is a
method ``train.balancers`` can name, its settings ``balancer.<name>`` are validated by its own model, it trains,
the sweep can tune its settings, and the evaluate and promote stages take it by name. Nothing else is edited.

Training runs in this process (:class:`~pipeline.train.loop.Trainer`, as a Ray worker runs it): Ray's worker
processes import the installed package, which does not hold a test's temporary file.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import pytest

import pipeline.balancers
from pipeline.balancers import balancer_class, balancer_classes, build_balancer, check_methods
from pipeline.config import deep_merge, with_overlay
from pipeline.data.folds import load_fold, load_test
from pipeline.errors import ConfigError
from pipeline.evaluate import evaluate as evaluate_stage
from pipeline.registry import promote as promote_stage
from pipeline.tasks import build_tasks
from pipeline.train.checkpoint import save_checkpoint
from pipeline.train.loop import Trainer
from pipeline.train.train import evaluate_on_driver, fold_summary, write_metrics
from pipeline.tune.grid import grid_size, trial_params
from pipeline.tune.results import tuned_params_yaml
from tests.conftest import isolated_mlflow, tiny_params

TOY_MODULE = "pipeline.balancers.first_task_first"
TOY_FILE = '''"""First task first: the first task's loss weighs ``balancer.toy.first_weight``, the others 1."""

from __future__ import annotations

import torch
from pydantic import Field

from pipeline.balancers.base import Balancer
from pipeline.config import MethodSettings


class FirstTaskFirstSettings(MethodSettings):
    first_weight: float = Field(2.0, gt=0.0, description="weight of the first task's loss")


class FirstTaskFirst(Balancer):
    name = "toy"
    settings_model = FirstTaskFirstSettings

    def __init__(self, task_names, first_weight=2.0):
        super().__init__(task_names)
        self.first_weight = first_weight

    @classmethod
    def from_params(cls, task_names, params):
        return cls(task_names, FirstTaskFirstSettings.of(params, cls.name).first_weight)

    def weights(self):
        weights = torch.ones(self.num_tasks, dtype=torch.float64)
        weights[0] = self.first_weight
        return weights
'''


@pytest.fixture
def toy_balancer(tmp_path, monkeypatch):
    """The toy balancer's one file in a folder of the balancers package; unloaded again afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{TOY_MODULE.rsplit('.', 1)[1]}.py").write_text(TOY_FILE)
    monkeypatch.setattr(pipeline.balancers, "__path__", [*pipeline.balancers.__path__, str(folder)])
    balancer_classes.cache_clear()
    yield
    monkeypatch.undo()
    sys.modules.pop(TOY_MODULE, None)
    gc.collect()
    balancer_classes.cache_clear()
    assert "toy" not in balancer_classes()


def _params(root: Path, **overrides):
    return tiny_params(
        **deep_merge(
            {
                "model": {"width": 8},
                "train": {"balancers": ["equal", "toy"], "folds": [0], "epochs": 2},
                "balancer": {"toy": {"first_weight": 3.0}},
                "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "experiment": "plugin", "system_metrics": False},
                "registry": {"model_name": "toy-model", "package": "fold", "floors": {"lesion.dice": 0.0}},
                "evaluate": {"contour_images": 1},
            },
            overrides,
        )
    )


def test_a_new_balancer_file_is_registered_with_its_settings(toy_balancer, tmp_path):
    assert {"equal", "toy"} <= set(balancer_classes())
    check_methods(_params(tmp_path))
    with pytest.raises(ConfigError, match=r"tiny params: balancer.toy.first_weight = 0: Input should be greater"):
        check_methods(_params(tmp_path, balancer={"toy": {"first_weight": 0}}))


def test_a_new_balancer_is_tunable_by_name(toy_balancer, tmp_path):
    """The sweep's grid over its settings is checked by its settings model, a trial's params set them, and the
    selected point reaches its training through ``tuned_params.yaml`` (the sweep itself runs Ray trials, whose
    processes cannot import a test's temporary file: tests/tune/test_sweep.py sweeps DWA through Ray)."""
    params = _params(tmp_path, tune={"balancer": "toy", "grid": {"first_weight": [1.0, 4.0]}})
    check_methods(params)
    with pytest.raises(ConfigError, match=r"tune.grid.first_weight = -1.0: Input should be greater than 0"):
        check_methods(_params(tmp_path, tune={"balancer": "toy", "grid": {"first_weight": [-1.0]}}))
    assert grid_size(params.tune) == 2
    trial = trial_params(params, {"first_weight": 4.0})
    assert build_balancer("toy", ["lesion", "diagnosis"], trial).weights().tolist() == [4.0, 1.0]
    (tmp_path / "tuned.yaml").write_text(tuned_params_yaml({"first_weight": 4.0}, "toy", ["equal", "toy"]))
    tuned = with_overlay(params, tmp_path / "tuned.yaml", "toy")
    assert build_balancer("toy", ["lesion", "diagnosis"], tuned).weights().tolist() == [4.0, 1.0]


def test_a_new_balancer_file_trains_and_is_evaluated_and_promoted_by_name(toy_balancer, tiny_data, tmp_path):
    params = _params(tmp_path)
    tasks, test = build_tasks(params), load_test(tiny_data)
    for name in params.train.balancers:  # what the train stage leaves, trained here in-process
        trainer = Trainer(params, tasks, name, load_fold(tiny_data, 0), 0)
        result = trainer.fit()
        assert [r["weight/lesion"] for r in result.history] == [3.0 if name == "toy" else 1.0] * 2
        save_checkpoint(tmp_path / "models" / name / "fold_0" / "best.pt", {"model": trainer.best_model})
        model = balancer_class(name).build_network(params, tasks)
        model.load_state_dict(trainer.best_model)
        summary = fold_summary(result, evaluate_on_driver(params, model, tasks, test))
        write_metrics(tasks, name, {"fold_0": summary}, result.history, test, tmp_path / "metrics" / name)

    metrics = evaluate_stage.run(params, tiny_data, tmp_path / "models", tmp_path / "metrics", tmp_path / "reports")
    assert set(metrics) == {"equal", "toy"}
    assert 0.0 <= metrics["toy"]["lesion"]["dice"] <= 1.0

    toy_only = _params(tmp_path, train={"balancers": ["toy"]})
    with isolated_mlflow():
        report = promote_stage.run(toy_only, tmp_path / "models", tmp_path / "metrics", tiny_data, tmp_path / "p.json")
    assert report["candidate"]["balancer"] == "toy"
    assert json.loads((tmp_path / "p.json").read_text())["candidate"]["balancer"] == "toy"
