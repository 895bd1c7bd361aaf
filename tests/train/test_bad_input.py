"""Training refuses data a task cannot learn and batches it cannot split, before any step is taken."""

import numpy as np
import pytest

from pipeline.data.folds import load_fold
from pipeline.errors import ConfigError, DataError
from pipeline.tasks import Task, build_tasks
from pipeline.train.loop import Trainer
from tests.conftest import tiny_params


def test_labels_beyond_a_classification_head_are_rejected_before_training(tiny_data):
    params = tiny_params()
    one_output = tuple(
        Task(t.name, t.kind, t.target, 1) if t.kind == "classification" else t for t in build_tasks(params)
    )
    with pytest.raises(
        DataError,
        match=r"fold 0 train data: task 'diagnosis' \(classification\) "
        r"needs label values in 0\.\.0, found \[1\]",
    ):
        Trainer(params, one_output, "equal", load_fold(tiny_data, 0), fold=0)


@pytest.mark.parametrize(
    ("task", "values", "bad"),
    [
        (Task("lesion", "binary_segmentation", "mask", 1), np.array([[0, 1], [255, 1]]), "[255]"),
        (Task("tissue", "multiclass_segmentation", "mask", 4), np.array([[0, 3], [4, 5]]), "[4, 5]"),
        (Task("diagnosis", "classification", "label", 2), np.array([0, 1, -1]), "[-1]"),
    ],
)
def test_targets_outside_the_task_kind_name_the_task_and_the_values(task, values, bad):
    with pytest.raises(DataError, match=rf"task '{task.name}' \({task.kind}\).*found \{bad}"):
        task.check_targets(values, "somewhere")


def test_a_batch_that_cannot_be_split_into_micro_batches_is_rejected(tiny_data):
    params = tiny_params(train={"batch_size": 7, "grad_accum_steps": 2})
    with pytest.raises(ConfigError, match="train.batch_size = 7 must be divisible by workers × grad_accum_steps = 2"):
        Trainer(params, build_tasks(params), "equal", load_fold(tiny_data, 0), fold=0)
