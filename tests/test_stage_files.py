"""A file one stage writes and another reads: a missing, unreadable or malformed one is one error naming the file,
the key at fault and the stage to re-run; a written one reads back as it was, byte for byte."""

import math

import pytest

from pipeline.errors import DataError
from pipeline.train.folds_file import FoldsDocument, folds_path, read_folds
from tests.folds_documents import write_folds


def test_a_written_document_reads_back_as_written_and_rewrites_to_the_same_bytes(tmp_path):
    write_folds(tmp_path, "dwa", {0: {"val": {"lesion": {"dice": 0.7, "auc": math.nan}}, "epochs_run": 3}})
    first = folds_path(tmp_path, "dwa").read_bytes()
    read = read_folds(tmp_path, "dwa")
    fold = read.fold(0, folds_path(tmp_path, "dwa"))
    assert (fold.epochs_run, fold.val["lesion"]["dice"], read.balancer) == (3, 0.7, "dwa")
    assert math.isnan(fold.val["lesion"]["auc"])  # NaN (an undefined AUC) survives the file
    read.write(folds_path(tmp_path, "dwa"))
    assert folds_path(tmp_path, "dwa").read_bytes() == first


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, r"dwa/folds.json: not found \(run the train stage of 'dwa' first\)"),
        ("{not json", r"dwa/folds.json: not valid JSON .*; rerun the train stage of 'dwa'"),
        ('{"balancer": "dwa"}', r"dwa/folds.json: folds: Field required \(and 2 more\); rerun the train stage"),
    ],
)
def test_a_missing_unreadable_or_incomplete_file_names_itself_and_the_stage_to_rerun(tmp_path, content, expected):
    if content is not None:
        folds_path(tmp_path, "dwa").parent.mkdir(parents=True)
        folds_path(tmp_path, "dwa").write_text(content)
    with pytest.raises(DataError, match=expected):
        read_folds(tmp_path, "dwa")


def test_a_value_of_the_wrong_type_is_named_by_its_dotted_key(tmp_path):
    document = write_folds(tmp_path, "dwa", {0: {}}).model_dump()
    document["folds"]["fold_0"]["best_val_loss"] = "low"
    folds_path(tmp_path, "dwa").write_text(FoldsDocument.model_construct(**document).model_dump_json())
    with pytest.raises(DataError, match=r"folds\.fold_0\.best_val_loss: Input should be a valid number"):
        read_folds(tmp_path, "dwa")
