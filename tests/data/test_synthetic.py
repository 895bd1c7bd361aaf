"""The built-in synthetic dataset: reproducible, configurable, and learnable only from lesion shape
and context, not from lesion brightness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from pipeline.data import ingest
from pipeline.data.images import read_mask
from pipeline.data.manifest import read_manifest
from pipeline.data.synthetic import synthesize
from pipeline.errors import DataError
from tests.data.fixtures_busi import params_for

pytestmark = pytest.mark.usefixtures("scratch")
ALL = ("normal", "benign", "malignant")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _ingest(out: Path, seed: int = 42, classes=ALL, **counts) -> Path:
    counts = {"n_normal": 2, "n_benign": 3, "n_malignant": 3, "size": 64} | counts
    ingest.run(params_for("synthetic", classes=classes, seed=seed, **counts), out_dir=out)
    return out


def test_same_seed_gives_byte_identical_files_and_manifest(tmp_path):
    assert _files(_ingest(tmp_path / "a")) == _files(_ingest(tmp_path / "b"))


def test_different_seed_gives_different_images(tmp_path):
    a = read_manifest(_ingest(tmp_path / "a", seed=1)).records
    b = read_manifest(_ingest(tmp_path / "b", seed=2)).records
    assert [r.id for r in a] == [r.id for r in b]
    assert all(x.sha256 != y.sha256 for x, y in zip(a, b))


def test_adding_images_keeps_the_existing_ones(tmp_path):
    few = {r.id: r.sha256 for r in read_manifest(_ingest(tmp_path / "few", n_benign=2)).records}
    more = {r.id: r.sha256 for r in read_manifest(_ingest(tmp_path / "more", n_benign=5)).records}
    assert few.items() <= more.items() and len(more) == len(few) + 3


def test_counts_classes_and_masks_follow_the_params(tmp_path):
    out = _ingest(tmp_path / "out", classes=("normal", "malignant"), n_normal=2, n_benign=3, n_malignant=4)
    records = read_manifest(out).records
    assert sorted(r.label for r in records) == ["malignant"] * 4 + ["normal"] * 2
    for record in records:
        mask = read_mask([out / m for m in record.masks])
        assert mask.shape == (64, 64)
        assert mask.any() == (record.label != "normal")


def test_a_configured_class_with_zero_images_is_an_error(tmp_path):
    with pytest.raises(DataError, match="data.synthetic.n_benign = 0"):
        _ingest(tmp_path / "out", n_benign=0)


def _solidity(mask: np.ndarray) -> float:
    """Lesion area / area of the convex hull of its pixel squares (1 = convex, lower = spiculated)."""
    rows, cols = np.nonzero(mask)
    corners = [np.stack([cols + dx, rows + dy], 1) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)]
    return mask.sum() / ConvexHull(np.concatenate(corners)).volume


def _separation(benign: np.ndarray, malignant: np.ndarray) -> float:
    """Difference of class means in units of the pooled within-class standard deviation."""
    return abs(benign.mean() - malignant.mean()) / np.sqrt((benign.var() + malignant.var()) / 2)


def test_lesion_brightness_does_not_tell_the_class_but_shape_does():
    features = {}
    for label in ("benign", "malignant"):
        brightness, solidity = [], []
        for index in range(1, 81):
            image, mask = synthesize(seed=7, label=label, index=index, size=64)
            brightness.append(image[mask == 1].mean())
            solidity.append(_solidity(mask))
        features[label] = np.array(brightness), np.array(solidity)
    (b_bright, b_solid), (m_bright, m_solid) = features["benign"], features["malignant"]
    assert _separation(b_bright, m_bright) < 0.5
    assert _separation(b_solid, m_solid) > 0.8 and b_solid.mean() > m_solid.mean()
