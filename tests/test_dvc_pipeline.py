"""`dvc repro` of the real dvc.yaml: runs every stage once, then only what a param change touches."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import deep_merge
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([Path(sys.executable).parent / "dvc", *args], cwd=cwd, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_repro_is_incremental(tmp_path):
    for item in ("pipeline", "profiles", "dvc.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    full = yaml.safe_load((ROOT / "params.yaml").read_text())  # dvc needs every declared key present
    params = deep_merge(deep_merge(full, TINY), {"train": {"balancers": ["equal"], "epochs": 1, "folds": [0]}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _dvc(tmp_path, "init", "--no-scm", "-q")

    first = _dvc(tmp_path, "repro")
    assert _ran(first) == {"ingest", "split", "preprocess", "augment", "train@equal"}
    assert "up to date" in _dvc(tmp_path, "status")
    assert _ran(_dvc(tmp_path, "repro")) == set()

    params["augment"]["copies_per_image"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert _ran(_dvc(tmp_path, "repro")) == {"augment", "train@equal"}
    assert (tmp_path / "metrics" / "equal" / "metrics.json").is_file()
    assert (tmp_path / "metrics" / "equal" / "folds.json").is_file()
