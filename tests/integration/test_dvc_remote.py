"""A DVC remote on the team S3 store: the pipeline's data artifacts one machine pushes, a machine with an
empty cache pulls back byte for byte (the team's way to share data versions without re-running stages);
a push to a remote whose endpoint is down fails saying so and loses nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.local import stack
from pipeline.config import deep_merge
from tests.conftest import TINY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REMOTE_PREFIX = "dvc"
DATA_STAGES = ("ingest", "split", "preprocess", "augment")
DATA_OUTPUTS = ("data/ingested", "data/split", "data/preprocessed", "data/augmented")
DVC = (sys.executable, "-m", "dvc")


def _env(tmp_path: Path, store: stack.S3) -> dict[str, str]:
    """This process's environment with ``store``'s credentials instead of any AWS or DVC settings."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_"))},
        **store.env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the stages' `python`
        "DVC_NO_ANALYTICS": "1",
        # DVC's per-user and per-machine folders (config, index, update checks) under the test's folder
        "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
    }


def _run(cwd: Path, env: dict[str, str], *command: str) -> str:
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(command)}:\n{out.stdout}{out.stderr}"
    return out.stdout + out.stderr


def _digests(root: Path, outputs: tuple[str, ...]) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for out in outputs
        for p in sorted((root / out).rglob("*"))
        if p.is_file()
    }


def test_pushed_data_artifacts_pull_back_identical_into_an_empty_cache(s3_store, tmp_path):
    """The data stages of the real dvc.yaml (tiny profile) → ``dvc push`` to S3; cache and outputs deleted;
    ``dvc pull`` restores every file byte for byte, and DVC sees the pipeline up to date without re-running."""
    project = tmp_path / "project"
    for item in ("pipeline", "dvc.yaml"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, project / item)
    full = yaml.safe_load((ROOT / "params.yaml").read_text())  # dvc needs every declared key present
    (project / "params.yaml").write_text(yaml.safe_dump(deep_merge(full, TINY)))
    env = _env(tmp_path, s3_store)
    _run(project, env, *DVC, "init", "--no-scm", "-q")
    _run(project, env, *DVC, "repro", *DATA_STAGES)
    before = _digests(project, DATA_OUTPUTS)
    _run(project, env, *DVC, "remote", "add", "-d", "team", f"s3://{s3_store.bucket}/{REMOTE_PREFIX}")
    _run(project, env, *DVC, "remote", "modify", "team", "endpointurl", s3_store.endpoint_url)
    _run(project, env, *DVC, "push", *DATA_STAGES)

    pushed = [
        item["Key"]
        for page in s3_store.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=s3_store.bucket, Prefix=f"{REMOTE_PREFIX}/")
        for item in page.get("Contents", [])
    ]
    assert len(pushed) == len(before) + len(DATA_OUTPUTS)  # every file, and each output folder's listing
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data")

    _run(project, env, *DVC, "pull", *DATA_STAGES)
    assert _digests(project, DATA_OUTPUTS) == before
    assert "Running stage" not in _run(project, env, *DVC, "repro", *DATA_STAGES)


def test_push_to_a_remote_whose_endpoint_is_down_fails_naming_it_and_keeps_the_cache(tmp_path):
    """DVC's own behaviour, documented: one ERROR line with the endpoint URL and the object's key, a non-zero
    exit, cache and workspace as they were. DVC's S3 client follows the standard AWS retry variables: with
    ``AWS_RETRY_MODE=standard`` and ``AWS_MAX_ATTEMPTS=2`` it gives up in seconds (its default, 5 tries in
    legacy mode, takes about 13 s here)."""
    # An endpoint that went down: nothing listens on the port. (Not a moto server started and stopped: its
    # reset on stop would wipe the session's S3 store, which moto keeps in this same process.)
    store = stack.S3(f"http://127.0.0.1:{stack.free_port()}", "mtl-team", "down-key", "down-secret")
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "scan.png").write_bytes(bytes(range(256)) * 16)
    env = {**_env(tmp_path, store), "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2"}
    _run(project, env, *DVC, "init", "--no-scm", "-q")
    _run(project, env, *DVC, "add", "-q", "data/scan.png")
    _run(project, env, *DVC, "remote", "add", "-d", "team", f"s3://{store.bucket}/{REMOTE_PREFIX}")
    _run(project, env, *DVC, "remote", "modify", "team", "endpointurl", store.endpoint_url)
    before = _digests(project, (".dvc/cache", "data"))

    push = subprocess.run([*DVC, "push"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert push.returncode != 0
    errors = [line for line in (push.stdout + push.stderr).splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, push.stderr
    assert "Could not connect to the endpoint URL" in errors[0]
    assert f"{store.endpoint_url}/{store.bucket}/{REMOTE_PREFIX}/files/md5/" in errors[0]
    assert _digests(project, (".dvc/cache", "data")) == before
