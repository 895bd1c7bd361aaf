"""`compare --strict` passes only when every balancer beats every trivial predictor on every task."""

import pytest

from pipeline.errors import PipelineError
from pipeline.evaluate.compare import run, verdicts
from tests.conftest import tiny_params
from tests.folds_documents import write_folds


def _write(folder, balancer, dice, accuracy):
    write_folds(
        folder,
        balancer,
        {},
        mean={"test": {"lesion": {"dice": dice}, "diagnosis": {"accuracy": accuracy}}},
        baseline={
            "test": {
                "lesion": {"all_background": {"dice": 0.0}, "all_foreground": {"dice": 0.2}},
                "diagnosis": {"majority_class": {"accuracy": 0.6}},
            }
        },
    )


def test_a_balancer_at_the_majority_accuracy_does_not_beat_the_baselines(tmp_path):
    params = tiny_params(train={"balancers": ["equal", "dwa"]})
    _write(tmp_path, "equal", dice=0.8, accuracy=0.7)
    _write(tmp_path, "dwa", dice=0.8, accuracy=0.6)
    assert [r["beats"] for r in verdicts(params, tmp_path)] == [True, False]
    with pytest.raises(PipelineError, match=r"\['dwa'\] do not beat"):
        run(params, tmp_path, strict=True)
    run(params, tmp_path, strict=False)  # report only


def test_a_fold_mean_that_equals_the_majority_up_to_rounding_is_a_tie(tmp_path):
    params = tiny_params(train={"balancers": ["gradnorm"]})
    _write(tmp_path, "gradnorm", dice=0.8, accuracy=(0.56 + 0.64) / 2)  # 0.6000000000000001
    assert [r["beats"] for r in verdicts(params, tmp_path)] == [False]


def test_missing_metrics_name_the_file(tmp_path):
    with pytest.raises(PipelineError, match=r"equal/folds.json: not found"):
        verdicts(tiny_params(train={"balancers": ["equal"]}), tmp_path)
