"""A DVC remote on the team S3 store: what one machine pushes, a machine with an empty cache pulls back
byte for byte (the team's way to share data and models without re-running the pipeline)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REMOTE_PREFIX = "dvc"


def _run(cwd: Path, env: dict[str, str], *command: str) -> str:
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(command)}:\n{out.stdout}{out.stderr}"
    return out.stdout + out.stderr


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pushed_data_pulls_back_identical_into_an_empty_cache(s3_store, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_"))},
        **s3_store.env(),
        "DVC_NO_ANALYTICS": "1",
        # DVC's per-user and per-machine folders (config, index, update checks) under the test's folder
        "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
    }
    dvc = (sys.executable, "-m", "dvc")
    _run(project, env, "git", "init", "-q")
    _run(project, env, *dvc, "init", "-q")
    data = project / "data"
    (data / "images").mkdir(parents=True)
    for i in range(3):
        (data / "images" / f"{i}.bin").write_bytes(os.urandom(4096 + i))
    (data / "manifest.json").write_text('{"images": 3}\n')
    before = _digests(data)
    _run(project, env, *dvc, "add", "-q", "data")
    _run(project, env, *dvc, "remote", "add", "-d", "team", f"s3://{s3_store.bucket}/{REMOTE_PREFIX}")
    _run(project, env, *dvc, "remote", "modify", "team", "endpointurl", s3_store.endpoint_url)
    _run(project, env, *dvc, "push")

    pushed = [item["Key"] for item in s3_store.client().list_objects_v2(
        Bucket=s3_store.bucket, Prefix=f"{REMOTE_PREFIX}/").get("Contents", [])]
    assert len(pushed) == len(before) + 1  # every file, and the directory listing
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(data)

    _run(project, env, *dvc, "pull")
    assert _digests(data) == before
