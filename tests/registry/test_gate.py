"""The promotion gate decides from test metrics alone: better by min_improvement and above every floor."""

import math

import pytest

from pipeline.config import RegistryParams
from pipeline.registry.gate import decide, flat_metrics, primary_score

GATE = RegistryParams(
    primary=("lesion.dice", "diagnosis.accuracy"),
    min_improvement=0.01,
    floors={"lesion.dice": 0.5, "diagnosis.accuracy": 0.6},
)
CHAMPION = {"lesion.dice": 0.80, "diagnosis.accuracy": 0.70}  # primary score 0.75


def metrics(dice: float, accuracy: float) -> dict[str, float]:
    return {"lesion.dice": dice, "diagnosis.accuracy": accuracy, "lesion.iou": 0.1}


def test_primary_score_is_the_mean_of_the_listed_metrics():
    assert primary_score(metrics(0.9, 0.6), GATE.primary) == pytest.approx(0.75)
    assert flat_metrics({"lesion": {"dice": 0.9}, "diagnosis": {"accuracy": 0.6}}) == {
        "lesion.dice": 0.9,
        "diagnosis.accuracy": 0.6,
    }


def test_a_better_candidate_is_promoted_with_its_reasons():
    decision = decide(metrics(0.84, 0.70), CHAMPION, GATE)  # 0.77 vs 0.75
    assert decision.promote
    assert decision.candidate_score == pytest.approx(0.77) and decision.champion_score == pytest.approx(0.75)
    assert "beats the champion's 0.7500 by 0.0200" in decision.reasons[-1]


@pytest.mark.parametrize(
    ("dice", "accuracy"),
    [(0.78, 0.70), (0.80, 0.70), (0.81, 0.70)],  # worse, tie, better by 0.005 < min_improvement 0.01
)
def test_a_worse_tied_or_barely_better_candidate_is_refused(dice, accuracy):
    decision = decide(metrics(dice, accuracy), CHAMPION, GATE)
    assert not decision.promote
    assert "does not beat the champion's 0.7500 by min_improvement 0.01" in decision.reasons[-1]


def test_a_metric_below_its_floor_refuses_even_a_much_better_candidate():
    decision = decide(metrics(0.99, 0.59), {"lesion.dice": 0.1, "diagnosis.accuracy": 0.1}, GATE)
    assert not decision.promote
    assert "diagnosis.accuracy = 0.5900 is below its floor 0.6" in decision.reasons


def test_without_champion_the_floors_decide():
    assert decide(metrics(0.5, 0.6), None, GATE).promote  # exactly at the floors
    refused = decide(metrics(0.49, 0.9), None, GATE)
    assert not refused.promote and refused.champion_score is None
    assert "lesion.dice = 0.4900 is below its floor 0.5" in refused.reasons


def test_nan_never_wins():
    assert not decide(metrics(math.nan, 0.9), None, GATE).promote
    gate = RegistryParams(primary=("lesion.auc",), floors={}, min_improvement=0.0)
    assert not decide({"lesion.auc": math.nan}, {"lesion.auc": 0.5}, gate).promote
    assert not decide({"lesion.auc": 0.9}, {"lesion.auc": math.nan}, gate).promote
