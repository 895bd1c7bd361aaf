"""The ingest stage: a BUSI-layout dataset (folder or archive) becomes ``files/`` + ``manifest.json``;
bad input fails with a one-line error naming the culprit and leaves the previous output intact."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import ingest
from pipeline.data.images import read_grey, read_mask
from pipeline.data.manifest import read_manifest
from pipeline.errors import DataError
from tests.data.fixtures_busi import params_for, save_png

pytestmark = pytest.mark.usefixtures("scratch")


def _records(out: Path) -> list[tuple]:
    """The source-independent content of a manifest: (id, label, image, masks, sha256) per record."""
    return [(r.id, r.label, r.image, r.masks, r.sha256) for r in read_manifest(out).records]


def test_busi_folder_gives_ids_labels_grey_images_and_merged_masks(busi, tmp_path):
    source, expected = busi
    out = tmp_path / "ingested"
    ingest.run(params_for(source, classes=("normal", "benign", "malignant")), out_dir=out)

    manifest = read_manifest(out)
    assert manifest.source == str(source)
    assert manifest.classes == ("normal", "benign", "malignant")
    assert [r.id for r in manifest.records] == sorted(expected)
    for record in manifest.records:
        want = expected[record.id]
        assert record.label == want.label
        np.testing.assert_array_equal(read_grey(out / record.image), want.grey)
        np.testing.assert_array_equal(read_mask([out / m for m in record.masks]), want.mask)
    masks = {r.id: r.masks for r in manifest.records}
    assert len(masks["benign_0002"]) == 2  # its _mask_1 file is kept, merged on reading


def test_only_configured_classes_are_ingested(busi, tmp_path):
    source, _ = busi
    ingest.run(params_for(source, classes=("benign", "malignant")), out_dir=tmp_path / "out")
    labels = read_manifest(tmp_path / "out").labels()
    assert sorted(set(labels)) == ["benign", "malignant"]
    assert not (tmp_path / "out" / "files" / "normal").exists()


def test_dataset_folder_itself_can_be_the_source(busi, tmp_path):
    source, _ = busi
    ingest.run(params_for(source), out_dir=tmp_path / "parent")
    ingest.run(params_for(source / "Dataset_BUSI_with_GT"), out_dir=tmp_path / "itself")
    assert _records(tmp_path / "parent") == _records(tmp_path / "itself")


def _redistributed(kaggle: Path, root: Path) -> Path:
    """A copy of the Kaggle folder ``kaggle`` in the re-distributed layout under ``root``:
    ``<class>/images/<class> (<n>).png`` and ``<class>/mask/<class> (<n>)_mask[_k].png``."""
    for path in sorted(kaggle.rglob("*.png")):
        sub = "mask" if "_mask" in path.stem else "images"
        target = root / path.parent.relative_to(kaggle) / sub / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return root


def test_the_redistributed_layout_gives_the_manifest_and_files_of_the_kaggle_folder(busi, tmp_path):
    source, _ = busi
    split = _redistributed(source / "Dataset_BUSI_with_GT", tmp_path / "split" / "BUSI")
    assert (split / "benign" / "images" / "benign (2).png").is_file()
    assert (split / "benign" / "mask" / "benign (2)_mask_1.png").is_file()
    classes = ("normal", "benign", "malignant")
    ingest.run(params_for(source, classes=classes), out_dir=tmp_path / "kaggle")
    ingest.run(params_for(tmp_path / "split", classes=classes), out_dir=tmp_path / "redistributed")

    kaggle, redistributed = read_manifest(tmp_path / "kaggle"), read_manifest(tmp_path / "redistributed")
    assert replace(redistributed, source=kaggle.source) == kaggle  # ids, labels, sha256s, paths, duplicates
    files = {p.relative_to(tmp_path / "kaggle"): p.read_bytes() for p in (tmp_path / "kaggle").rglob("*.png")}
    assert {
        p.relative_to(tmp_path / "redistributed"): p.read_bytes() for p in (tmp_path / "redistributed").rglob("*.png")
    } == files


def test_temporary_folders_are_removed(busi, tmp_path, scratch):
    source, _ = busi
    archive = shutil.make_archive(str(tmp_path / "busi"), "zip", source)
    ingest.run(params_for(archive), out_dir=tmp_path / "out")
    ingest.run(params_for("synthetic", n_benign=1, n_malignant=1), out_dir=tmp_path / "out")
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("fmt", ["zip", "gztar"])
def test_archive_ingests_to_the_same_records_as_the_folder(busi, tmp_path, fmt):
    source, _ = busi
    archive = shutil.make_archive(str(tmp_path / "busi"), fmt, source)
    assert archive.endswith((".zip", ".tar.gz"))
    ingest.run(params_for(source), out_dir=tmp_path / "from_folder")
    ingest.run(params_for(archive), out_dir=tmp_path / "from_archive")
    assert _records(tmp_path / "from_archive") == _records(tmp_path / "from_folder")
    assert read_manifest(tmp_path / "from_archive").source == archive


def _missing_mask(base: Path) -> Path:
    (base / "malignant" / "malignant (12)_mask.png").unlink()
    return base / "malignant" / "malignant (12).png"


def _mask_size_differs(base: Path) -> Path:
    mask = base / "benign" / "benign (2)_mask_1.png"
    save_png(mask, np.zeros((18, 31), dtype=np.uint8))
    return mask


def _corrupt_png(base: Path) -> Path:
    image = base / "benign" / "benign (1).png"
    image.write_bytes(image.read_bytes()[:60])
    return image


def _empty_class_folder(base: Path) -> Path:
    for path in (base / "malignant").iterdir():
        path.unlink()
    return base / "malignant"


def _image_in_both_layouts(base: Path) -> Path:
    copy = base / "benign" / "images" / "benign (1).png"
    copy.parent.mkdir()
    shutil.copyfile(base / "benign" / "benign (1).png", copy)
    return copy


@pytest.mark.parametrize(
    "damage", [_missing_mask, _mask_size_differs, _corrupt_png, _empty_class_folder, _image_in_both_layouts]
)
def test_bad_input_names_the_file_and_keeps_the_previous_output(busi, tmp_path, damage):
    source, _ = busi
    out = tmp_path / "ingested"
    params = params_for(source)
    ingest.run(params, out_dir=out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    culprit = damage(source / "Dataset_BUSI_with_GT")
    with pytest.raises(DataError) as err:
        ingest.run(params, out_dir=out)

    message = str(err.value)
    assert str(culprit) in message and "\n" not in message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ingested")] == []


def _zip_with(path: Path, name: str) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Dataset_BUSI_with_GT/benign/benign (1).png", b"not reached")
        zf.writestr(name, b"escaped")


def _tar_with(path: Path, member: tarfile.TarInfo) -> None:
    with tarfile.open(path, "w:gz") as tf:
        data = b"escaped"
        safe = tarfile.TarInfo("Dataset_BUSI_with_GT/benign/benign (1).png")
        safe.size = len(data)
        tf.addfile(safe, io.BytesIO(data))
        if member.isreg():
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
        else:
            tf.addfile(member)


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


ESCAPES = {
    "zip dot-dot": ("evil.zip", lambda p: _zip_with(p, "../escaped.png"), "../escaped.png"),
    "zip absolute": ("evil.zip", lambda p: _zip_with(p, "/tmp/escaped.png"), "/tmp/escaped.png"),
    "tar dot-dot": ("evil.tar.gz", lambda p: _tar_with(p, _tar_member("a/../../escaped")), "a/../../escaped"),
    "tar absolute": ("evil.tgz", lambda p: _tar_with(p, _tar_member("/tmp/escaped.png")), "/tmp/escaped.png"),
    "tar symlink out": (
        "evil.tar.gz",
        lambda p: _tar_with(p, _tar_member("link", tarfile.SYMTYPE, "../../escaped")),
        "link",
    ),
    "tar hardlink out": (
        "evil.tar.gz",
        lambda p: _tar_with(p, _tar_member("hard", tarfile.LNKTYPE, "/etc/passwd")),
        "hard",
    ),
}


@pytest.mark.parametrize("case", ESCAPES.values(), ids=ESCAPES.keys())
def test_archive_entry_escaping_the_target_is_rejected_before_extraction(busi, tmp_path, case):
    source, _ = busi
    out = tmp_path / "ingested"
    ingest.run(params_for(source), out_dir=out)
    manifest = (out / "manifest.json").read_bytes()

    name, write, entry = case
    archive = tmp_path / name
    write(archive)
    with pytest.raises(DataError) as err:
        ingest.run(params_for(archive), out_dir=out)

    message = str(err.value)
    assert str(archive) in message and repr(entry) in message and "\n" not in message
    assert (out / "manifest.json").read_bytes() == manifest
    assert not list(tmp_path.rglob("escaped*"))
