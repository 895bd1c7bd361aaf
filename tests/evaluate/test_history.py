"""Report curves average the folds still training at each epoch; a missing history is named."""

import pytest

from pipeline.errors import DataError
from pipeline.evaluate.history import mean_over_folds, read_history
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
