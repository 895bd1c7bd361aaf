"""A DVC remote on the team S3 store: the pipeline's data artifacts one machine pushes, a machine with an
empty cache pulls back byte for byte (the team's way to share data versions without re-running stages)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import deep_merge
from tests.conftest import TINY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REMOTE_PREFIX = "dvc"
DATA_STAGES = ("ingest", "split", "preprocess", "augment")
DATA_OUTPUTS = ("data/ingested", "data/split", "data/preprocessed", "data/augmented")


def _run(cwd: Path, env: dict[str, str], *command: str) -> str:
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(command)}:\n{out.stdout}{out.stderr}"
    return out.stdout + out.stderr


def _digests(root: Path, outputs: tuple[str, ...]) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for out in outputs for p in sorted((root / out).rglob("*")) if p.is_file()}


def test_pushed_data_artifacts_pull_back_identical_into_an_empty_cache(s3_store, tmp_path):
    """The data stages of the real dvc.yaml (tiny profile) → ``dvc push`` to S3; cache and outputs deleted;
    ``dvc pull`` restores every file byte for byte, and DVC sees the pipeline up to date without re-running."""
    project = tmp_path / "project"
    for item in ("pipeline", "dvc.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, project / item)
    full = yaml.safe_load((ROOT / "params.yaml").read_text())  # dvc needs every declared key present
    (project / "params.yaml").write_text(yaml.safe_dump(deep_merge(full, TINY)))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_"))},
        **s3_store.env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the stages' `python`
        "DVC_NO_ANALYTICS": "1",
        # DVC's per-user and per-machine folders (config, index, update checks) under the test's folder
        "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
    }
    dvc = (sys.executable, "-m", "dvc")
    _run(project, env, *dvc, "init", "--no-scm", "-q")
    _run(project, env, *dvc, "repro", *DATA_STAGES)
    before = _digests(project, DATA_OUTPUTS)
    _run(project, env, *dvc, "remote", "add", "-d", "team", f"s3://{s3_store.bucket}/{REMOTE_PREFIX}")
    _run(project, env, *dvc, "remote", "modify", "team", "endpointurl", s3_store.endpoint_url)
    _run(project, env, *dvc, "push", *DATA_STAGES)

    pushed = [item["Key"] for page in s3_store.client().get_paginator("list_objects_v2").paginate(
        Bucket=s3_store.bucket, Prefix=f"{REMOTE_PREFIX}/") for item in page.get("Contents", [])]
    assert len(pushed) == len(before) + len(DATA_OUTPUTS)  # every file, and each output folder's listing
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data")

    _run(project, env, *dvc, "pull", *DATA_STAGES)
    assert _digests(project, DATA_OUTPUTS) == before
    assert "Running stage" not in _run(project, env, *dvc, "repro", *DATA_STAGES)
