"""A full disk while a stage writes its output: the previous output stays byte for byte, nothing temporary is
left, and the error is one line naming the output and saying there is no space left.

The disk is a real, small tmpfs mounted for the test (root only; skipped elsewhere, saying why).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.atomic import atomic_write_bytes
from pipeline.data import preprocess
from pipeline.errors import OutputError
from tests.data.fixtures_arrays import make_ingested, make_params

ROOT = Path(__file__).resolve().parents[2]
DISK_SIZE = "256k"  # the 32 px arrays of the fixture's 40 images fit; the 64 px ones (4x) do not


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder that is a tmpfs of :data:`DISK_SIZE`, unmounted after the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_preprocess_on_a_full_disk_keeps_the_previous_arrays_and_says_so_in_one_line(small_disk, tmp_path):
    ingested = make_ingested(tmp_path / "ingested")
    out = small_disk / "preprocessed"
    preprocess.run(make_params(), ingested=ingested, out_dir=out)
    before = _digests(out)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(make_params(data={"image_size": 64}).model_dump(mode="json")))
    run = subprocess.run(  # its own process: writing a memory map on a full disk can kill it (SIGBUS)
        [
            sys.executable,
            "-m",
            "pipeline",
            "--params",
            str(params),
            "preprocess",
            "--ingested",
            str(ingested),
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: {out}: no space left on device while writing it; its previous version is unchanged"
    )
    assert _digests(out) == before
    assert os.listdir(small_disk) == ["preprocessed"]  # no temporary folder or file left


def test_a_file_output_on_a_full_disk_keeps_its_previous_bytes(small_disk):
    report = small_disk / "promotion.json"
    atomic_write_bytes(report, b'{"decision": "promoted"}\n')
    with pytest.raises(OutputError, match=rf"^{report}: no space left on device while writing it; its previous"):
        atomic_write_bytes(report, bytes(1 << 20))
    assert report.read_bytes() == b'{"decision": "promoted"}\n'
    assert os.listdir(small_disk) == ["promotion.json"]
