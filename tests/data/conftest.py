"""Fixtures for the data-stage tests."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.data.fixtures_busi import Expected, make_busi_folder


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Redirect temporary folders (archive extraction, S3 downloads, synthetic) under ``tmp_path``."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def busi(tmp_path: Path) -> tuple[Path, dict[str, Expected]]:
    """A BUSI-layout source folder (the parent of ``Dataset_BUSI_with_GT``) and its expected contents."""
    root = tmp_path / "source"
    return root, make_busi_folder(root)
