"""A stage that fails half-way leaves its previous output exactly as it was."""

import os
import stat

import pytest

from pipeline.atomic import atomic_dir, atomic_write_json


def test_failed_write_keeps_the_previous_directory(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("stage failed")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp leftovers


def test_successful_write_replaces_the_whole_directory(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]


def test_json_is_byte_stable(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    atomic_write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_outputs_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            atomic_write_json(tmp / "m.json", {})
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "m.json").stat().st_mode) == 0o644
