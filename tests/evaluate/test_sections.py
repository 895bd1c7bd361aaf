"""Report tables: mean ± std over folds, the best balancer of every column in bold; the tuning section."""

import pytest

from pipeline.errors import DataError
from pipeline.evaluate import sections
from pipeline.evaluate.document import Table, to_html, to_markdown
from pipeline.evaluate.evaluation_files import EvaluationSummary, TaskInfo
from pipeline.evaluate.report import read_tune
from pipeline.evaluate.summary import TABLE_III, over_folds
from pipeline.tune.tune_file import TuneDocument


def _summary(dice: dict, memory: dict) -> EvaluationSummary:
    """A summary.json of two folds: per balancer Dice and peak memory per fold, other columns constant."""
    results = {}
    for balancer, dices in dice.items():
        folds = [
            {
                "lesion": {m: 0.5 for m in ("accuracy", "iou", "auc", "recall", "precision")} | {"dice": d},
                "efficiency": {k: 1.0 for k in TABLE_III} | {"peak_memory_mib": mem},
            }
            for d, mem in zip(dices, memory[balancer])
        ]
        results[balancer] = over_folds(folds)
    return EvaluationSummary(
        balancers=list(dice),
        folds=[0, 1],
        test_images=6,
        tasks=[TaskInfo(name="lesion", kind="binary_segmentation", classes=["background", "foreground"])],
        results=results,
        ensembles={},
    )


def _column(table: Table, title: str) -> list[tuple[str, bool]]:
    j = table.header.index(title)
    return [(row[j].text, row[j].bold) for row in table.rows]


def test_tables_show_mean_and_sample_std_and_bold_the_best_balancer():
    summary = _summary(
        dice={"equal": [0.8, 0.6], "dwa": [0.9, 0.7], "atdwa": [0.85, 0.75]},
        memory={"equal": [100.0, 102.0], "dwa": [90.0, 94.0], "atdwa": [92.0, 92.0]},
    )
    dice = _column(sections.table_ii(summary, "lesion", "binary_segmentation"), "dice")
    assert dice == [("0.7000 ± 0.1414", False), ("0.8000 ± 0.1414", True), ("0.8000 ± 0.0707", True)]
    memory = _column(sections.table_iii(summary), "peak memory (MiB)")
    assert memory == [("101.0 ± 1.4", False), ("92.0 ± 2.8", True), ("92.0 ± 0.0", True)]  # lower is better
    assert all(bold for _, bold in _column(sections.table_ii(summary, "lesion", "binary_segmentation"), "auc"))


def test_bold_cells_render_bold_in_markdown_and_html():
    summary = _summary(dice={"equal": [0.8, 0.6], "dwa": [0.9, 0.7]}, memory={"equal": [1, 1], "dwa": [1, 1]})
    table = sections.table_ii(summary, "lesion", "binary_segmentation")
    markdown = to_markdown([table])
    assert "| equal | **0.5000 ± 0.0000** | 0.7000 ± 0.1414 |" in markdown  # accuracy tied: both bold
    assert "| dwa | **0.5000 ± 0.0000** | **0.8000 ± 0.1414** |" in markdown
    assert "<strong>0.8000 ± 0.1414</strong>" in to_html([table], "t")


TUNE = TuneDocument(
    sweep="tune-atdwa-0123456789ab",
    balancer="atdwa",
    folds=[0, 1],
    epochs=8,
    rows=[
        {
            "gamma": 0.4,
            "t0": 2.0,
            "window": 3,
            "status": "complete",
            "folds_done": 2,
            "lesion.dice_mean": 0.81,
            "lesion.dice_std": 0.02,
            "val_loss_mean": 0.5,
            "val_loss_std": 0.05,
        },
        {
            "gamma": 0.8,
            "t0": 2.0,
            "window": 3,
            "status": "complete",
            "folds_done": 2,
            "lesion.dice_mean": 0.84,
            "lesion.dice_std": 0.01,
            "val_loss_mean": 0.4,
            "val_loss_std": 0.04,
        },
    ],
    selected={"gamma": 0.8, "t0": 2.0, "window": 3},
    rule="min_std",
    metric="lesion.dice",
)


def test_tuning_section_marks_the_selected_row_and_states_the_rule():
    text, table = sections.tuning(TUNE)
    assert "min_std" in text.text and "gamma = 0.8" in text.text
    assert table.header == (
        "gamma",
        "t0",
        "window",
        "status",
        "folds",
        "lesion.dice (val, mean ± std)",
        "val_loss (val, mean ± std)",
    )
    assert [row[0].bold for row in table.rows] == [False, True]
    assert table.rows[1][5].text == "0.8400 ± 0.0100"


def test_tuning_section_says_when_the_sweep_has_not_run(tmp_path):
    assert read_tune(tmp_path / "tune.json") is None
    (block,) = sections.tuning(None)
    assert "has not run" in block.text


def test_a_malformed_tune_json_is_named(tmp_path):
    path = tmp_path / "tune.json"
    path.write_text('{"rows": []}')
    with pytest.raises(DataError, match=str(path)):
        read_tune(path)


LINEAGE = {
    "data_version": "abc",
    "data_hash_source": "dvc.lock",
    "git_commit": "123",
    "git_dirty": "false",
    "params_hash": "f" * 64,
}


def test_provenance_lists_every_duplicate_group_or_says_there_are_none():
    summary = _summary(dice={"equal": [0.8, 0.6]}, memory={"equal": [1.0, 1.0]})
    groups = [["benign_0001", "benign_0007"], ["benign_0008", "malignant_0001"]]
    listed = to_markdown(sections.provenance(LINEAGE, summary, groups))
    assert "2 groups of images with identical pixels" in listed
    assert "`benign_0008` = `malignant_0001`" in listed
    assert "No two images have identical pixels." in to_markdown(sections.provenance(LINEAGE, summary, []))


def test_a_tissue_task_gets_a_dice_and_iou_column_per_tissue_in_class_order():
    folds = [
        {"tissue": {"dice_slough": s, "iou_slough": s / 2, "dice_granulation": 0.9, "iou_granulation": 0.8}}
        for s in (0.6, 0.8)
    ]
    summary = EvaluationSummary(
        balancers=["equal"],
        folds=[0, 1],
        test_images=4,
        results={"equal": over_folds(folds)},
        tasks=[
            TaskInfo(name="tissue", kind="multiclass_segmentation", classes=["background", "slough", "granulation"])
        ],
        ensembles={},
    )
    (table,) = sections.per_class(summary, "tissue")
    assert table.header == ("balancer", "Dice slough", "IoU slough", "Dice granulation", "IoU granulation")
    assert _column(table, "Dice slough") == [("0.7000 ± 0.1414", True)]


def test_a_class_absent_from_the_test_truth_shows_as_absent_with_its_false_positive_pixels():
    def fold(necrosis_predicted: float) -> dict:  # what TaskMetrics gives when no test pixel is necrosis
        return {"tissue": {"dice_slough": 0.6, "iou_slough": 0.4, "fp_pixels_necrosis": necrosis_predicted}}

    results = {"equal": over_folds([fold(0), fold(0)]), "stl": over_folds([fold(1200), fold(1300)])}
    summary = EvaluationSummary(
        balancers=["equal", "stl"],
        folds=[0, 1],
        test_images=4,
        results=results,
        tasks=[TaskInfo(name="tissue", kind="multiclass_segmentation", classes=["background", "slough", "necrosis"])],
        ensembles={},
    )
    table, note = sections.per_class(summary, "tissue")
    assert _column(table, "Dice necrosis") == _column(table, "IoU necrosis") == [("—", False), ("—", False)]
    assert _column(table, "Dice slough") == [("0.6000 ± 0.0000", True), ("0.6000 ± 0.0000", True)]
    assert "`necrosis` occurs in no test image's ground truth" in note.text
    assert "equal 0, stl 1,250." in note.text
    markdown = to_markdown([table, note])
    assert "1.0000" not in markdown and "0.0000 ±" not in markdown  # never a perfect (or a zero) score


def test_provenance_names_the_configured_tissues_that_no_mask_has():
    summary = _summary(dice={"equal": [0.8, 0.6]}, memory={"equal": [1.0, 1.0]})
    listed = to_markdown(sections.provenance(LINEAGE, summary, [], ["necrosis"]))
    assert "Configured tissue classes (`data.tissues`) that occur in no mask of the dataset: `necrosis`" in listed
    assert "data.tissues" not in to_markdown(sections.provenance(LINEAGE, summary, [], []))


def test_tasks_converge_together_only_where_they_bottom_out_at_one_epoch_before_the_last():
    epochs = {
        "gradnorm": {0: {"wound": 3, "tissue": 3, "last": 9}, 1: {"wound": 9, "tissue": 9, "last": 9}},
        "equal": {0: {"wound": 2, "tissue": 5, "last": 9}},
    }
    _, table = sections.convergence(epochs, ["wound", "tissue"])
    assert [tuple(c.text for c in row) for row in table.rows] == [
        ("gradnorm", "3, 9 (last)", "3, 9 (last)", "1 of 2"),
        ("equal", "2", "5", "0 of 1"),
    ]
