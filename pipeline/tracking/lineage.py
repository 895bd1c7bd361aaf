"""What a run was made from: flattened params, the code commit and the versions of the data artifacts.

Data artifact hashes come from ``dvc.lock`` when it lists the artifact *and* the local DVC cache
confirms that the artifact's manifest on disk is the one DVC recorded (so a lock left stale by running
a stage outside DVC is not believed); otherwise every artifact is hashed as the sha256 of its
manifest (``manifest.json`` / ``split.json``), which records the sha256 of every array it describes.
The tag ``data_hash_source`` says which (``dvc.lock`` or ``manifest``; one source for all artifacts).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipeline import paths
from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.tracking.redaction import redact_values

REPO = Path(__file__).resolve().parents[2]
DVC_CACHE = Path(".dvc") / "cache" / "files" / "md5"
# artifact -> (folder under the data root, the manifest file that fingerprints its content)
ARTIFACTS = {
    "split": (paths.SPLIT.relative_to(paths.DATA), paths.SPLIT_FILE),
    "preprocessed": (paths.PREPROCESSED.relative_to(paths.DATA), paths.MANIFEST),
    "augmented": (paths.AUGMENTED.relative_to(paths.DATA), paths.MANIFEST),
}
LINEAGE_KEYS = (
    "git_commit",
    "git_dirty",
    "seed",
    "params_hash",
    "data_version",
    "data_hash_source",
    *(f"data_hash/{name}" for name in ARTIFACTS),
)


def flatten_params(params: Params) -> dict[str, str]:
    """Every parameter as ``{"train.lr": "0.001", "train.balancers": '["equal", "dwa"]', ...}``.

    Nested sections become dotted keys; lists (tuples) and other non-strings are JSON; secrets are masked.
    """
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = value if isinstance(value, str) else json.dumps(value)

    walk("", params.model_dump(mode="json"))
    return redact_values(flat)


def lineage_tags(params: Params, data_root: Path) -> dict[str, str]:
    """Tags tying a run to its code, params and data.

    ``git_commit``, ``git_dirty`` (tracked files modified), ``seed``, ``params_hash`` (sha256 of the
    validated params JSON), ``data_hash/<artifact>`` for split/preprocessed/augmented under
    ``data_root``, ``data_hash_source`` and ``data_version`` (7 hex digits over the three hashes).
    A missing manifest raises :class:`DataError` naming it.
    """
    hashes, source = data_hashes(Path(data_root))
    combined = hashlib.sha256("".join(f"{k}={v}\n" for k, v in sorted(hashes.items())).encode()).hexdigest()
    commit, dirty = git_state()
    return redact_values(
        {
            "git_commit": commit,
            "git_dirty": dirty,
            "seed": str(params.seed),
            "params_hash": hashlib.sha256(params.model_dump_json().encode()).hexdigest(),
            "data_version": combined[:7],
            "data_hash_source": source,
            **{f"data_hash/{name}": value for name, value in hashes.items()},
        }
    )


def data_hashes(data_root: Path) -> tuple[dict[str, str], str]:
    """``({artifact: hash}, source)``: DVC md5s if ``dvc.lock`` vouches for all three, else manifest sha256s."""
    manifests = {name: data_root / folder / manifest for name, (folder, manifest) in ARTIFACTS.items()}
    for path in manifests.values():
        if not path.is_file():
            raise DataError(f"{path}: not found (run the pipeline's data stages first)")
    from_lock = _dvc_hashes(manifests)
    if from_lock is not None:
        return from_lock, "dvc.lock"
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in manifests.items()}, "manifest"


def _dvc_hashes(manifests: dict[str, Path]) -> dict[str, str] | None:
    """The lock's md5 of every artifact folder, or None unless each one is confirmed by the DVC cache."""
    repo = next((d for d in manifests["split"].resolve().parents if (d / "dvc.lock").is_file()), None)
    if repo is None:
        return None
    try:
        lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
        outs = {out["path"]: out.get("md5") for stage in lock["stages"].values() for out in stage.get("outs", [])}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None
    hashes = {}
    for name, manifest in manifests.items():
        folder = manifest.resolve().parent
        md5 = outs.get(folder.relative_to(repo).as_posix()) if folder.is_relative_to(repo) else None
        if not md5 or not _cache_confirms(repo, md5, manifest):
            return None
        hashes[name] = md5
    return hashes


def _cache_confirms(repo: Path, dir_md5: str, manifest: Path) -> bool:
    """True when the DVC cache's listing of folder ``dir_md5`` holds ``manifest`` with its current md5."""
    listing = repo / DVC_CACHE / dir_md5[:2] / dir_md5[2:]
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
        recorded = next(e["md5"] for e in entries if e["relpath"] == manifest.name)
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return False
    return recorded == hashlib.md5(manifest.read_bytes(), usedforsecurity=False).hexdigest()


def git_state() -> tuple[str, str]:
    """(commit, "true"/"false" for modified tracked files) of the code's repository, or ("unknown", "unknown")."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, str(dirty).lower()


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()
