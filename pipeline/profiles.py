"""Named parameter profiles (``profiles/<name>.yaml``) merged into the params file.

``mtl-pipeline apply-profile paper`` rewrites ``params.yaml`` with the paper protocol's values, after
validating the merged result, so ``dvc repro`` / ``dvc exp run`` then runs that protocol.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.atomic import atomic_write_text
from pipeline.config import deep_merge, parse_params, read_yaml
from pipeline.errors import ConfigError

PROFILES = Path("profiles")


def apply(profile: str, params_path: Path, data: str | None = None) -> None:
    """Merge ``profiles/<profile>.yaml`` into ``params_path`` (validated first; the file is replaced atomically).

    ``data`` (``make run … DATA=…``) becomes ``data.source``. A profile of a real dataset leaves
    ``data.source`` null: it needs ``data``, and its absence is a one-line error naming the profile.
    """
    source = PROFILES / f"{profile}.yaml"
    if not source.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise ConfigError(f"profile {profile!r}: {source} not found; known profiles: {known}")
    overrides = read_yaml(source)
    if data is not None:
        overrides = deep_merge(overrides, {"data": {"source": data}})
    elif "source" in overrides.get("data", {}) and overrides["data"]["source"] is None:
        raise ConfigError(
            f"profile {profile!r} reads a real dataset: give its folder, archive or s3:// prefix, "
            f"e.g. make run PROFILE={profile} DATA=/path/to/dataset"
        )
    merged = deep_merge(read_yaml(params_path), overrides)
    parse_params(merged, f"{params_path} + {source}")
    atomic_write_text(params_path, yaml.safe_dump(merged, sort_keys=False))
