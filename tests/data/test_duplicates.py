"""Exact-duplicate images: ingest finds them by pixels, split never lets one copy train while another tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.data import ingest, split
from pipeline.data.manifest import Manifest, Record, read_manifest, write_manifest
from tests.data.fixtures_arrays import COUNTS, make_params, record_id
from tests.data.fixtures_busi import params_for, save_png

pytestmark = pytest.mark.usefixtures("scratch")


def _plant(source, expected, label: str, n: int, like: str, rgb: bool = False) -> None:
    """Save ``like``'s pixels again as ``<label> (<n>).png`` (RGB-encoded grey if ``rgb``), with a mask."""
    folder = source / "Dataset_BUSI_with_GT" / label
    grey = expected[like].grey
    save_png(folder / f"{label} ({n}).png", np.repeat(grey[..., None], 3, axis=2) if rgb else grey)
    save_png(folder / f"{label} ({n})_mask.png", np.zeros_like(grey))


def test_ingest_finds_images_with_identical_pixels_and_flags_conflicting_labels(busi, tmp_path, capsys):
    source, expected = busi
    _plant(source, expected, "benign", 7, like="benign_0001", rgb=True)  # same pixels, other bytes
    _plant(source, expected, "benign", 8, like="malignant_0001")  # same pixels, other class
    ingest.run(_params(source), out_dir=tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert manifest.duplicates == (("benign_0001", "benign_0007"), ("benign_0008", "malignant_0001"))
    err = capsys.readouterr().err
    assert "benign_0008 (benign) = malignant_0001 (malignant) CONFLICTING LABELS" in err
    assert "benign_0001 (benign) = benign_0007 (benign)\n" in err + "\n"


def test_a_dataset_without_duplicates_records_none(busi, tmp_path):
    source, _ = busi
    ingest.run(_params(source), out_dir=tmp_path / "out")
    assert read_manifest(tmp_path / "out").duplicates == ()
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["duplicates"] == []


def _params(source):
    return params_for(source, classes=("benign", "malignant", "normal"))


GROUPS = (
    tuple(record_id("benign", n) for n in (0, 5, 9)),  # one image saved three times
    (record_id("benign", 3), record_id("malignant", 2)),  # one image under two labels
)


@pytest.mark.parametrize("seed", range(8))
def test_every_duplicate_group_stays_in_one_split_and_one_fold(tmp_path, seed):
    records = tuple(
        Record(record_id(c, n), c, f"{c}/{n}.png", (f"{c}/{n}_mask.png",), "0" * 64)
        for c, k in COUNTS.items()
        for n in range(k)
    )
    write_manifest(tmp_path / "ingested", Manifest("test", "busi", tuple(COUNTS), records, GROUPS))
    split.run(make_params(seed=seed), ingested=tmp_path / "ingested", out_dir=tmp_path / "split")
    s = json.loads((tmp_path / "split" / "split.json").read_text())
    assert sorted(s["train"] + s["test"]) == sorted(r.id for r in records)  # nobody dropped
    for group in GROUPS:
        assert set(group) <= set(s["train"]) or set(group) <= set(s["test"]), group
        if set(group) <= set(s["train"]):
            assert sum(bool(set(group) & set(f["val"])) for f in s["folds"]) == 1, group
    assert s["duplicates"] == [list(g) for g in GROUPS]
