"""The candidate — a fold model or a fold ensemble — is chosen on validation metrics, never on test metrics
(which would leak the test set)."""

import pytest

from pipeline.errors import ConfigError, DataError
from pipeline.registry.candidate import select_candidate
from tests.conftest import tiny_params
from tests.folds_documents import write_folds

PARAMS = tiny_params(train={"balancers": ["equal", "dwa"]}, registry={"package": "fold"})


def write_scores(metrics_dir, balancer, per_fold):
    """``per_fold``: {fold: (val dice, val accuracy, test dice, test accuracy)}."""
    folds = {
        k: {
            "val": {"lesion": {"dice": vd, "iou": 0.0}, "diagnosis": {"accuracy": va}},
            "test": {"lesion": {"dice": td, "iou": 0.0}, "diagnosis": {"accuracy": ta}},
        }
        for k, (vd, va, td, ta) in per_fold.items()
    }
    write_folds(metrics_dir, balancer, folds)


@pytest.fixture
def trained(tmp_path):
    metrics, models = tmp_path / "metrics", tmp_path / "models"
    write_scores(metrics, "equal", {0: (0.70, 0.70, 0.99, 0.99), 1: (0.80, 0.70, 0.50, 0.50)})
    write_scores(metrics, "dwa", {0: (0.60, 0.70, 0.99, 0.99), 1: (0.80, 0.69, 0.99, 0.99)})
    for balancer in ("equal", "dwa"):
        for fold in (0, 1):
            (models / balancer / f"fold_{fold}").mkdir(parents=True)
            (models / balancer / f"fold_{fold}" / "best.pt").write_bytes(b"weights")
    return models, metrics


def test_the_best_validation_score_wins_whatever_the_test_scores(trained):
    models, metrics = trained
    chosen = select_candidate(PARAMS, models, metrics)
    assert (chosen.package, chosen.balancer, chosen.folds) == ("fold", "equal", (1,))  # the worst test score
    assert chosen.score == pytest.approx(0.75)
    assert chosen.checkpoints == (models / "equal" / "fold_1" / "best.pt",)
    assert set(chosen.validation) == {"lesion.dice", "lesion.iou", "diagnosis.accuracy"}


def test_an_ensemble_is_the_balancer_with_the_best_mean_validation_score_over_its_folds(trained):
    models, metrics = trained
    write_scores(metrics, "dwa", {0: (0.99, 0.99, 0.0, 0.0), 1: (0.40, 0.40, 0.99, 0.99)})  # the best fold, worse mean
    assert select_candidate(PARAMS, models, metrics).balancer == "dwa"
    chosen = select_candidate(tiny_params(train={"balancers": ["equal", "dwa"]}), models, metrics)  # the default
    assert (chosen.package, chosen.balancer, chosen.folds) == ("ensemble", "equal", (0, 1))
    assert chosen.checkpoints == (models / "equal" / "fold_0" / "best.pt", models / "equal" / "fold_1" / "best.pt")
    assert chosen.validation == pytest.approx({"lesion.dice": 0.75, "lesion.iou": 0.0, "diagnosis.accuracy": 0.70})
    assert chosen.score == pytest.approx(0.725)  # dwa's mean is 0.695, whatever its test scores


def test_only_configured_balancers_and_folds_compete(trained):
    models, metrics = trained
    chosen = select_candidate(tiny_params(train={"balancers": ["dwa"], "folds": [0]}), models, metrics)
    assert (chosen.balancer, chosen.folds) == ("dwa", (0,))


def test_a_gate_metric_the_evaluation_lacks_is_named_with_the_allowed_ones(trained):
    models, metrics = trained
    params = tiny_params(train={"balancers": ["equal"]}, registry={"primary": ["lesion.dce"]})
    with pytest.raises(ConfigError, match=r"\['lesion.dce'\] are not metrics .*allowed: \['diagnosis.accuracy'"):
        select_candidate(params, models, metrics)


def test_missing_metrics_or_checkpoint_name_the_file(trained):
    models, metrics = trained
    with pytest.raises(DataError, match=r"metrics/atdwa/folds.json: not found \(run the train stage of 'atdwa'"):
        select_candidate(tiny_params(train={"balancers": ["atdwa"]}), models, metrics)
    (models / "equal" / "fold_1" / "best.pt").unlink()
    with pytest.raises(DataError, match=r"equal/fold_1/best.pt: not found"):
        select_candidate(PARAMS, models, metrics)
