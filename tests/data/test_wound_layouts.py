"""The wound datasets: DFUTissue and FUSeg folders (written by the tests) become the same arrays the breast
workload trains on, plus the tissue index masks; the wound region comes from the tissue labels; the published
test subset stays the test split; duplicates never leak; configured tissues that no mask has are named; bad
masks, a missing source or a folder of the other dataset fail with errors naming the file or folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import parse_params
from pipeline.data import ingest, preprocess, split
from pipeline.data.folds import load_fold, load_test
from pipeline.data.manifest import read_manifest
from pipeline.data.split import read_split
from pipeline.errors import ConfigError, DataError
from tests.data.fixtures_busi import make_busi_folder, params_for, save_png

pytestmark = pytest.mark.usefixtures("scratch")
SHAPE = (32, 32)  # = data.image_size: the arrays hold the pixels as given
TISSUES = ["slough", "granulation", "callus"]


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)


def _tissue(seed: int, classes: int = len(TISSUES)) -> np.ndarray:
    """A tissue index mask: a wound box filled with every tissue index, background around it."""
    index = np.zeros(SHAPE, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    top, left = rng.integers(2, 8), rng.integers(2, 10)
    index[top : top + 12, left : left + 16] = 1 + (np.arange(16) * classes // 16)[None, :]
    return index


def make_dfutissue(root: Path, trainval: int = 6, test: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``root/DFUTissue/Labeled/Original/{Images,Annotations}/{TrainVal,Test}/NNNN.png``; returns
    ``{id: (RGB photo (H, W, 3), tissue index (H, W))}``."""
    base = root / "DFUTissue" / "Labeled" / "Original"
    expected = {}
    number = 0
    for subset, count in (("TrainVal", trainval), ("Test", test)):
        for _ in range(count):
            number += 1
            photo, index = _photo(number), _tissue(number)
            save_png(base / "Images" / subset / f"{number:04d}.png", photo)
            save_png(base / "Annotations" / subset / f"{number:04d}.png", index)
            expected[f"{subset.lower()}_{number:04d}"] = (photo, index)
    (base / "Images" / "TrainVal" / "README.txt").write_text("stray, ignored\n")
    return expected


def make_fuseg(root: Path, train: int = 6, validation: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``root/FUSeg/{train,validation}/{images,labels}/NNNN.png``, masks 0/255; returns ``{id: (photo, mask)}``."""
    expected = {}
    for subset, count in (("train", train), ("validation", validation)):
        for n in range(1, count + 1):
            photo, wound = _photo(100 + n + 50 * (subset == "train")), (_tissue(n) > 0).astype(np.uint8)
            save_png(root / "FUSeg" / subset / "images" / f"{n:04d}.png", photo)
            save_png(root / "FUSeg" / subset / "labels" / f"{n:04d}.png", wound * np.uint8(255))
            expected[f"{subset}_{n:04d}"] = (photo, wound)
    return expected


def wound_params(source: Path, layout: str = "dfutissue", **data):
    tasks = [{"name": "wound", "kind": "binary_segmentation", "target": "mask"}]
    if layout == "dfutissue":
        tasks.append({"name": "tissue", "kind": "multiclass_segmentation", "target": "tissue"})
    raw = {
        "workload": "wound",
        "data": {
            "source": str(source),
            "layout": layout,
            "image_size": 32,
            "channels": 3,
            "tissues": [{"name": n, "colour": [10 * i, 20, 30]} for i, n in enumerate(TISSUES)],
            **data,
        },
        "tasks": tasks,
        "split": {"k_folds": 2},
        "augment": {"copies_per_image": 1},
    }
    if layout == "fuseg":  # the wound workload selects and gates on tissue.dice by default
        raw |= {
            "tune": {"selection": {"metric": "wound.dice"}},
            "registry": {"primary": ["wound.dice"], "floors": {"wound.dice": 0.5}},
        }
    return parse_params(raw, "test")


def _stages(params, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    ingest.run(params, root / "ingested")
    split.run(params, root / "ingested", root / "split")
    preprocess.run(params, root / "ingested", root / "preprocessed")
    from pipeline.data import augment

    augment.run(params, root / "preprocessed", root / "split", root / "augmented")
    return root


def test_dfutissue_gives_rgb_images_tissue_masks_and_the_wound_derived_from_them(tmp_path):
    expected = make_dfutissue(tmp_path / "source")
    root = _stages(wound_params(tmp_path / "source"), tmp_path)

    manifest = read_manifest(root / "ingested")
    assert manifest.layout == "dfutissue" and manifest.classes == ("wound",)
    assert [r.id for r in manifest.records] == sorted(expected)
    test = load_test(root)
    assert set(test.ids) == {i for i in expected if i.startswith("test_")}  # the published Test subset
    rows = test.read(range(len(test)))
    for row, record_id in enumerate(test.ids):
        photo, index = expected[record_id]
        assert np.array_equal(rows["tissue"][row], index)
        assert np.array_equal(rows["mask"][row], (index > 0).astype(np.uint8))  # wound = tissue > 0
        assert np.array_equal(rows["image"][row], photo.transpose(2, 0, 1))  # RGB, channels first
    fold = load_fold(root, 0)
    train = fold.train.read(range(len(fold.train)))
    assert set(np.unique(train["tissue"])) <= {0, 1, 2, 3}  # augmented copies keep the indices
    assert np.array_equal(train["mask"], (train["tissue"] > 0).astype(np.uint8))  # and mask and tissue align


def test_fuseg_gives_wound_masks_and_keeps_its_validation_subset_for_testing(tmp_path):
    expected = make_fuseg(tmp_path / "source")
    root = _stages(wound_params(tmp_path / "source", layout="fuseg"), tmp_path)

    test = load_test(root)
    assert set(test.ids) == {i for i in expected if i.startswith("validation_")}
    rows = test.read(range(len(test)))
    assert "tissue" not in rows  # FUSeg has no tissue labels
    for row, record_id in enumerate(test.ids):
        assert np.array_equal(rows["mask"][row], expected[record_id][1])


def test_a_duplicate_planted_across_trainval_and_test_is_reported_and_does_not_leak(tmp_path, capsys):
    source = tmp_path / "source"
    make_dfutissue(source)
    base = source / "DFUTissue" / "Labeled" / "Original"
    copy = base / "Images" / "TrainVal" / "0002.png"
    copy.write_bytes((base / "Images" / "Test" / "0008.png").read_bytes())  # the same photo, another label
    root = _stages(wound_params(source), tmp_path)

    assert read_manifest(root / "ingested").duplicates == (("test_0008", "trainval_0002"),)
    assert "test_0008 (wound) = trainval_0002 (wound)" in capsys.readouterr().err
    layout = read_split(root / "split")
    assert {"trainval_0002", "test_0008"} <= set(layout.test)  # the group went to the test split whole
    assert all("trainval_0002" not in fold.train + fold.val for fold in layout.folds)
    assert "trainval_0002" not in set(load_fold(root, 0).train.source_ids) | set(load_fold(root, 1).train.source_ids)


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda path: save_png(path, _tissue(1, classes=5)), "index values [4, 5] outside the configured classes"),
        (lambda path: Image.fromarray(_tissue(1)).convert("P").save(path), "palette PNG, but an index PNG is expected"),
        (lambda path: save_png(path, np.repeat(_tissue(1)[..., None], 3, axis=2)), "RGB PNG, but an index PNG"),
    ],
    ids=["index outside the tissues", "palette PNG", "colour PNG"],
)
def test_a_bad_tissue_mask_fails_ingest_naming_the_file_and_keeps_the_previous_output(tmp_path, write, message):
    source = tmp_path / "source"
    make_dfutissue(source)
    params = wound_params(source)
    out = tmp_path / "ingested"
    ingest.run(params, out)
    before = (out / "manifest.json").read_bytes()
    bad = source / "DFUTissue" / "Labeled" / "Original" / "Annotations" / "TrainVal" / "0003.png"
    write(bad)

    with pytest.raises(DataError) as err:
        ingest.run(params, out)
    assert str(err.value).startswith(f"{bad}: ") and message in str(err.value)
    assert "granulation" in str(err.value)  # the allowed classes are named
    assert (out / "manifest.json").read_bytes() == before


def test_a_configured_tissue_that_no_mask_has_is_named_at_ingest(tmp_path, capsys):
    source = tmp_path / "source"
    make_dfutissue(source)  # slough, granulation and callus in every mask
    ingest.run(wound_params(source), tmp_path / "complete")
    assert read_manifest(tmp_path / "complete").absent_tissues == ()
    assert "occur in no tissue mask" not in capsys.readouterr().err

    tissues = [{"name": n, "colour": [10 * i, 20, 30]} for i, n in enumerate([*TISSUES, "necrosis"])]
    ingest.run(wound_params(source, tissues=tissues), tmp_path / "ingested")
    assert read_manifest(tmp_path / "ingested").absent_tissues == ("necrosis",)
    assert "data.tissues ['necrosis'] occur in no tissue mask of the 9 images" in capsys.readouterr().err


BAD_SOURCES = {  # (what data.source points at, the layout params read it as)
    "missing folder as busi": ("nowhere", "busi"),
    "missing folder as dfutissue": ("nowhere", "dfutissue"),
    "DFUTissue folder as busi": ("dfutissue", "busi"),
    "BUSI folder as dfutissue": ("busi", "dfutissue"),
    "BUSI folder as fuseg": ("busi", "fuseg"),
}


@pytest.mark.parametrize("case", BAD_SOURCES.values(), ids=BAD_SOURCES.keys())
def test_a_missing_source_or_another_dataset_names_the_path_and_the_layout_and_keeps_the_output(tmp_path, case):
    pointed, layout = case
    make_busi_folder(tmp_path / "busi")
    make_dfutissue(tmp_path / "dfutissue")
    make_fuseg(tmp_path / "fuseg")

    def params(source: Path):
        return params_for(source) if layout == "busi" else wound_params(source, layout=layout)

    out = tmp_path / "ingested"
    ingest.run(params(tmp_path / layout), out)  # the previous run, of the right dataset
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DataError) as err:
        ingest.run(params(tmp_path / pointed), out)

    message = str(err.value)
    assert str(tmp_path / pointed) in message and f"data.layout '{layout}' expects" in message
    assert "\n" not in message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ingested")] == []


def test_a_tissue_task_needs_a_layout_with_tissue_labels(tmp_path):
    raw = {
        "workload": "wound",
        "data": {"source": str(tmp_path), "layout": "fuseg"},
        "tasks": [{"name": "tissue", "kind": "multiclass_segmentation", "target": "tissue"}],
    }
    with pytest.raises(ConfigError, match=r"tasks.tissue: data.layout 'fuseg' has no 'tissue' targets"):
        parse_params(raw, "params.yaml")
    with pytest.raises(ConfigError, match=r"data.layout = 'dfutissue': workload 'busi' reads \['busi'\]"):
        parse_params({"data": {"layout": "dfutissue"}}, "params.yaml")


def test_the_wound_workload_sets_its_tasks_model_and_gate_where_the_file_is_silent():
    params = parse_params({"workload": "wound"}, "params.yaml")
    assert [(t.name, t.target) for t in params.tasks] == [("wound", "mask"), ("tissue", "tissue")]
    assert params.model.name == "attention_unet" and params.data.layout == "dfutissue"
    assert params.registry.primary == ("wound.dice", "tissue.dice")
    assert parse_params({"workload": "wound", "model": {"name": "unet"}}, "p").model.name == "unet"  # the file wins
