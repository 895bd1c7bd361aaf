"""``submit``: run a pipeline stage as a Ray job on a cluster (a thin wrapper of ``ray job submit``).

The job's entrypoint is ``python -m pipeline <stage args>`` with the project folder (the current
directory, or ``--working-dir``) uploaded as its working directory, less what is generated or
private (:data:`EXCLUDES`). Inside the job ``$RAY_ADDRESS`` names the cluster, so training and tuning
run there. The working directory is a copy on the cluster: outputs a later step needs must go where
every node and the user can reach them — the MLflow server, ``ray.storage_path`` on S3, a shared
filesystem, or a DVC remote.

Environment: :data:`FORWARDED` (where to track and store, never credentials) are passed to the job
when set here; ``--env NAME`` forwards more. Credentials belong in the cluster's own environment (a
Kubernetes Secret, the SLURM job's environment): a job's runtime environment is shown by the Ray
dashboard to everyone who can open it. To a token-authenticated cluster, ``ray`` authenticates with
``$RAY_AUTH_TOKEN`` or ``$RAY_AUTH_TOKEN_PATH``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Params
from pipeline.environment import environment, ray_address
from pipeline.errors import ConfigError, PipelineError
from pipeline.tracking.redaction import redact

EXCLUDES = (
    ".git",
    ".venv",
    ".dvc/cache",
    ".dvc/tmp",
    "__pycache__",
    "*.egg-info",
    "mlruns",
    "mlartifacts",
    "mlflow.db",
    "ray_results",
    "infra/compose/.env",
)
"""Paths (gitignore syntax, as Ray's ``excludes``) never uploaded with the working directory."""

FORWARDED = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "MLFLOW_DISABLE_TELEMETRY",
    "RAY_USAGE_STATS_ENABLED",
    "NO_ALBUMENTATIONS_UPDATE",
)
"""Variables passed to the job when they are set in this environment."""


def run(params: Params, stage_args: Sequence[str], **options: Any) -> None:
    """Submit ``python -m pipeline <stage_args>`` to the cluster at ``address`` (else ``ray.address``,
    ``$RAY_ADDRESS``); with ``wait``, follow its logs and raise PipelineError unless it succeeds.
    ``options``: the keyword arguments of :func:`job_command` (``commands``, the CLI's sub-commands, one of which
    ``stage_args`` must start with; ``address``, ``working_dir``, ``env``, ``wait``)."""
    command = job_command(params, stage_args, **options)
    print("submit:", redact(shlex.join(command)), flush=True)
    status = subprocess.run(command).returncode
    if status != 0:
        raise PipelineError(
            f"Ray job `python -m pipeline {shlex.join(stage_args)}` failed (ray job submit exit {status})"
        )


def job_command(
    params: Params,
    stage_args: Sequence[str],
    *,
    commands: Collection[str],
    address: str | None,
    working_dir: Path,
    env: Sequence[str] = (),
    wait: bool = True,
) -> list[str]:
    """The ``ray job submit`` command line; raises ConfigError for a missing address, stage, folder or variable."""
    address = address or ray_address(params)
    if not address:
        raise ConfigError("submit: no cluster given; pass --address, set ray.address or $RAY_ADDRESS")
    stage = list(stage_args)
    if not stage or stage[0] not in commands or stage[0] == "submit":
        allowed = sorted(set(commands) - {"submit"})
        raise ConfigError(f"submit: {stage[:1] or 'no stage'} is not a pipeline command; expected one of {allowed}")
    if not Path(working_dir).is_dir():
        raise ConfigError(f"submit --working-dir {working_dir}: not a folder")
    forwarded = environment((*FORWARDED, *env))
    unset = [name for name in env if name not in forwarded]
    if unset:
        raise ConfigError(f"submit --env: {unset} are not set in this environment")
    runtime_env = {"working_dir": str(Path(working_dir).resolve()), "excludes": list(EXCLUDES), "env_vars": forwarded}
    return [
        _ray_executable(),
        "job",
        "submit",
        f"--address={address}",
        f"--runtime-env-json={json.dumps(runtime_env)}",
        *([] if wait else ["--no-wait"]),
        "--",
        "python",
        "-m",
        "pipeline",
        *stage,
    ]


def _ray_executable() -> str:
    """The ``ray`` CLI of this interpreter's environment (else the one on ``$PATH``)."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise PipelineError("submit: the `ray` command is not installed (pip install 'ray[default]')")
    return found
