"""The sweep's selection rules, on hand-made tables of fold statistics."""

import math

import pytest

from pipeline.config import TuneSelectionParams
from pipeline.errors import ConfigError
from pipeline.tune.selection import select
from pipeline.tune.statistics import across_folds, fold_figures


def row(gamma, dice_mean, dice_std, loss_mean, folds_done=5):
    return {
        "gamma": gamma,
        "t0": 2.0,
        "window": 3,
        "folds_done": folds_done,
        "lesion.dice_mean": dice_mean,
        "lesion.dice_std": dice_std,
        "val_loss_mean": loss_mean,
        "val_loss_std": 0.1,
    }


def rule(name, metric="lesion.dice", tie=0.0):
    return TuneSelectionParams(rule=name, metric=metric, tie_tolerance=tie)


def test_lowest_std_across_folds_wins():
    rows = [row(0.1, 0.80, 0.05, 0.40), row(0.8, 0.70, 0.01, 0.90), row(0.5, 0.85, 0.03, 0.30)]
    assert select(rows, rule("min_std"), folds=5)["gamma"] == 0.8


def test_a_tie_in_std_goes_to_the_lower_mean_validation_loss():
    rows = [row(0.1, 0.80, 0.02, 0.50), row(0.8, 0.70, 0.02, 0.45), row(0.5, 0.85, 0.04, 0.10)]
    assert select(rows, rule("min_std"), folds=5)["gamma"] == 0.8


def test_stds_within_the_tie_tolerance_tie():
    rows = [row(0.1, 0.80, 0.0200, 0.50), row(0.8, 0.70, 0.0205, 0.45)]
    assert select(rows, rule("min_std", tie=0.0), folds=5)["gamma"] == 0.1
    assert select(rows, rule("min_std", tie=0.001), folds=5)["gamma"] == 0.8


def test_mean_rules():
    rows = [row(0.1, 0.80, 0.05, 0.40), row(0.8, 0.70, 0.01, 0.90), row(0.5, 0.85, 0.03, 0.30)]
    assert select(rows, rule("min_mean_val_loss"), folds=5)["gamma"] == 0.5
    assert select(rows, rule("max_mean_lesion.dice"), folds=5)["gamma"] == 0.5


def test_trials_stopped_before_the_last_fold_do_not_compete():
    rows = [row(0.1, 0.99, 0.0, 0.01, folds_done=2), row(0.8, 0.70, 0.05, 0.90)]
    assert select(rows, rule("min_std"), folds=5)["gamma"] == 0.8


def test_a_figure_the_sweep_does_not_have_is_named_in_the_error():
    with pytest.raises(ConfigError, match=r"no figure 'lesion.hausdorff'.*lesion.dice"):
        select([row(0.1, 0.8, 0.05, 0.4)], rule("min_std", metric="lesion.hausdorff"), folds=5)


def test_fold_statistics_are_mean_and_sample_std():
    folds = [fold_figures(0.5, {"lesion": {"dice": 0.6}}), fold_figures(0.7, {"lesion": {"dice": 0.8}})]
    stats = across_folds(folds)
    assert stats["val_loss_mean"] == pytest.approx(0.6)
    assert stats["lesion.dice_std"] == pytest.approx(math.sqrt(0.02))  # ddof = 1
    assert math.isnan(across_folds(folds[:1])["lesion.dice_std"])
