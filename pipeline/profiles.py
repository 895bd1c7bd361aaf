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


def apply(profile: str, params_path: Path) -> None:
    """Merge ``profiles/<profile>.yaml`` into ``params_path`` (validated first; the file is replaced atomically)."""
    source = PROFILES / f"{profile}.yaml"
    if not source.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise ConfigError(f"profile {profile!r}: {source} not found; known profiles: {known}")
    merged = deep_merge(read_yaml(params_path), read_yaml(source))
    parse_params(merged, f"{params_path} + {source}")
    atomic_write_text(params_path, yaml.safe_dump(merged, sort_keys=False))
