"""Report curves average the folds still training at each epoch; a missing history is named."""

import pytest

from pipeline.errors import DataError
from pipeline.evaluate.history import convergence_epochs, mean_over_folds, read_history
from pipeline.tracking.results import history_csv


def test_curves_average_the_folds_that_reached_each_epoch(tmp_path):
    records = [
        {"epoch": 0, "fold": 0, "weight/lesion": 1.0, "temperature": None, "best": True},
        {"epoch": 1, "fold": 0, "weight/lesion": 1.2, "temperature": None, "best": False},
        {"epoch": 0, "fold": 1, "weight/lesion": 3.0, "temperature": None, "best": True},  # stopped early
    ]
    (tmp_path / "history.csv").write_text(history_csv(records))
    mean = mean_over_folds(read_history(tmp_path / "history.csv"))
    assert mean == [
        {"epoch": 0.0, "weight/lesion": 2.0, "temperature": None},
        {"epoch": 1.0, "weight/lesion": 1.2, "temperature": None},
    ]


def test_a_missing_history_is_named(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "dwa" / "history.csv")):
        read_history(tmp_path / "dwa" / "history.csv")


def test_convergence_is_each_tasks_epoch_of_lowest_validation_loss_per_fold(tmp_path):
    losses = {0: [(0.9, 0.8), (0.5, 0.7), (0.6, 0.6)], 1: [(0.9, 0.9), (0.4, 0.4), (0.4, 0.5)]}  # (wound, tissue)
    records = [
        {"epoch": epoch, "fold": fold, "val_loss/wound": wound, "val_loss/tissue": tissue}
        for fold, per_epoch in losses.items()
        for epoch, (wound, tissue) in enumerate(per_epoch)
    ]
    (tmp_path / "history.csv").write_text(history_csv(records))
    epochs = convergence_epochs(read_history(tmp_path / "history.csv"), ["wound", "tissue"])
    # fold 0: wound bottoms out at epoch 1, tissue still falls at the last epoch; fold 1: both at 1 (ties: first)
    assert epochs == {0: {"wound": 1, "tissue": 2, "last": 2}, 1: {"wound": 1, "tissue": 1, "last": 2}}
