"""compare-runs: two runs' evaluations paired image by image, and refused when they scored different images."""

import csv

import pytest

from pipeline.errors import DataError
from pipeline.evaluate.runs_compared import run

COLUMNS = ["balancer", "fold", "index", "id", "lesion/dice", "lesion/iou", "diagnosis/correct"]


def _evaluation(folder, rows):
    path = folder / "reports" / "evaluation" / "per_image.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        for i, (image, dice, correct) in enumerate(rows):
            writer.writerow(
                {"balancer": "equal", "fold": 0, "index": i, "id": image, "lesion/dice": dice, "lesion/iou": dice / 2}
                | {"diagnosis/correct": correct}
            )
    return folder


def test_each_balancers_figures_are_compared_with_the_paired_tests(tmp_path):
    reference = _evaluation(tmp_path / "a", [("x", 0.8, 1), ("y", 0.6, 0), ("z", 0.7, 1)])
    candidate = _evaluation(tmp_path / "b", [("z", 0.75, 1), ("x", 0.9, 1), ("y", 0.65, 1)])  # row order differs
    result = run(reference, candidate)["equal"]
    assert result["lesion"]["metric"] == "dice"
    assert result["lesion"]["delta"] == pytest.approx((0.1 + 0.05 + 0.05) / 3)
    assert result["diagnosis"] == pytest.approx(
        {"metric": "accuracy", "reference": 2 / 3, "candidate": 1.0, "delta": 1 / 3, "p_value": 1.0}
    )  # one discordant image: exact McNemar p = 1


def test_runs_of_different_test_images_are_refused(tmp_path):
    reference = _evaluation(tmp_path / "a", [("x", 0.8, 1), ("y", 0.6, 0)])
    candidate = _evaluation(tmp_path / "b", [("x", 0.8, 1), ("w", 0.6, 0)])
    with pytest.raises(DataError, match="other \\(fold, image\\) pairs"):
        run(reference, candidate)
    with pytest.raises(DataError, match="evaluate stage"):
        run(reference, tmp_path / "nowhere")
