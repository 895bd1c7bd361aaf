"""Connecting the driver to Ray, and checking that the cluster can host a training job.

:func:`connect` joins the cluster named by ``ray.address`` (else ``$RAY_ADDRESS``) or, when neither
is set, starts a Ray on this machine. A named address is probed with a plain TCP connection first, so
a cluster that is not running is reported in seconds instead of after ``ray.init``'s retries. Call it
before loading any data.

Authentication: Ray 2.60 enables token authentication for a local Ray started by ``ray.init`` and
creates ``~/.ray/auth_token`` when no token exists; we keep that default (Ray's GCS listens on every
interface, so an unauthenticated cluster would run code for anyone who can reach it). To join an
existing cluster that uses tokens, set ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (a secret, never
logged) or ``RAY_AUTH_TOKEN_PATH``: Ray reads them itself.

Priority: Ray starts its task and actor processes at niceness 15 (``RAY_worker_niceness``), below its own
daemons, so that a node's control plane stays responsive under load. In this pipeline the workers *are* the
work: at niceness 15 a training worker gets about 1/28 of a core whenever a niceness-0 process (the driver,
Ray's dashboard agent, a second job) wants the same core, and a stalled intra-op thread stalls every parallel
region of the step. The job therefore asks for its workers at niceness 0 (:data:`JOB_RUNTIME_ENV`), the
priority of the in-process run it replaces (README: Benchmarks).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import ray

from pipeline.config import Params
from pipeline.environment import ray_address
from pipeline.errors import ConfigError, PipelineError
from pipeline.logs import ray_log_level

PROBE_TIMEOUT_S = 5.0
DEFAULT_GCS_PORT = 6379
JOB_RUNTIME_ENV = {"env_vars": {"RAY_worker_niceness": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}}
"""The runtime environment of this driver's job: its tasks and actors (Train workers, Tune trials) at niceness 0, and
Train controllers that poll their workers every 0.5 s instead of 2 s (a finished job is noticed at the next poll)."""
LOCAL_JOB_RUNTIME_ENV = {"env_vars": JOB_RUNTIME_ENV["env_vars"] | {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}}
""":data:`JOB_RUNTIME_ENV` on a Ray this driver starts: one node, none to be preempted, so no Train job starts the
preemption-watching actor (one more process start per job before its workers train)."""
_SEARCHED_ADDRESSES = ("auto", "local")  # Ray resolves these itself; there is no host:port to probe


def connect(params: Params) -> None:
    """Join (or start) the Ray cluster for ``params`` and check it has room for one training job.

    Does nothing but the check when this process is already connected. Raises PipelineError naming
    the address when nothing listens there or Ray refuses the connection, and ConfigError from
    :func:`check_resources`.
    """
    if not ray.is_initialized():
        address = ray_address(params)
        if address is None:
            # The dashboard (loopback only) serves the state API that Ray Train's placement-group cleaner
            # polls every second: without it, each poll logs a warning (thousands of lines per stage).
            ray.init(
                include_dashboard=True,
                runtime_env=LOCAL_JOB_RUNTIME_ENV,
                logging_config=ray.LoggingConfig(log_level=ray_log_level()),
            )
        else:
            source = "ray.address" if params.ray.address else "$RAY_ADDRESS"
            if address not in _SEARCHED_ADDRESSES:
                _probe(address, source)
            try:
                ray.init(
                    address=address,
                    runtime_env=JOB_RUNTIME_ENV,
                    logging_config=ray.LoggingConfig(log_level=ray_log_level()),
                )
            except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
                raise PipelineError(f"{source} = {address!r}: cannot connect to the Ray cluster: {exc}") from None
    check_resources(params)


def use_gpu(params: Params) -> bool:
    """Whether training workers take a GPU: ``train.device`` cpu/cuda decides; under ``auto``, ``ray.use_gpu``
    yes/no, or ``auto`` = the cluster has GPUs. Contradicting settings are a ConfigError."""
    device, choice = params.train.device, params.ray.use_gpu
    if device != "auto" and choice != "auto" and (device == "cuda") != (choice == "yes"):
        raise ConfigError(
            f"train.device = {device!r} contradicts ray.use_gpu = {choice!r}; "
            f"set ray.use_gpu = {'yes' if device == 'cuda' else 'no'!r} or 'auto'"
        )
    if device != "auto":
        return device == "cuda"
    if choice == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return choice == "yes"


def job_slots(params: Params) -> int:
    """How many training jobs of ``params`` the connected cluster holds at once (at least 1): its CPUs over one
    job's ``ray.num_workers × ray.cpus_per_worker``, and its GPUs over one job's when the workers take GPUs."""
    cfg, total = params.ray, ray.cluster_resources()
    slots = int(total.get("CPU", 0) // (cfg.num_workers * cfg.cpus_per_worker))
    if use_gpu(params):
        slots = min(slots, int(total.get("GPU", 0) // cfg.num_workers))
    return max(1, slots)


def check_resources(params: Params) -> None:
    """Raise ConfigError unless the connected cluster has the CPUs (and GPUs) of one training job.

    Ray would otherwise wait forever for a placement group it can never schedule. An autoscaling
    cluster is judged by what it has now.
    """
    cfg = params.ray
    total = ray.cluster_resources()
    cpus = cfg.num_workers * cfg.cpus_per_worker
    if cpus > total.get("CPU", 0):
        raise ConfigError(
            f"ray.num_workers = {cfg.num_workers} × ray.cpus_per_worker = {cfg.cpus_per_worker} needs {cpus} CPUs, "
            f"but the Ray cluster has {total.get('CPU', 0):g}; lower ray.num_workers or ray.cpus_per_worker"
        )
    if use_gpu(params) and cfg.num_workers > total.get("GPU", 0):
        raise ConfigError(
            f"ray.num_workers = {cfg.num_workers} needs one GPU each (ray.use_gpu = {cfg.use_gpu!r}), "
            f"but the Ray cluster has {total.get('GPU', 0):g} GPUs; lower ray.num_workers or set ray.use_gpu = 'no'"
        )


def _probe(address: str, source: str) -> None:
    """Raise PipelineError unless something accepts TCP connections at ``address``'s host and port."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port or DEFAULT_GCS_PORT
    except ValueError:
        host = None
    if not host:
        raise ConfigError(f"{source} = {address!r}: expected host:port or ray://host:port")
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise PipelineError(
            f"{source} = {address!r}: no Ray cluster answers at {host}:{port} ({exc}); start it "
            f"(`ray start --head --port={port}`) or unset {source} to run on a local Ray"
        ) from None
