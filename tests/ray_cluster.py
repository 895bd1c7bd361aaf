"""A real, throw-away Ray cluster for tests, shared by the whole session (a plugin of ``tests/conftest.py``).

Register it once, never by importing the fixture into test modules: each import would be a fixture
definition of its own, so a second module would start a second cluster and re-point this process's
auth settings at it while the driver is still connected to the first, and Ray would end the process.

``ray start --head --block`` with 2 CPUs, its files in a temp dir. Token authentication stays on, as
on a production cluster (Ray's GCS listens on every interface), with a random token in that temp dir
(``RAY_AUTH_TOKEN_PATH``), so nothing is written to ``~/.ray``. Ray caches its auth settings in the
process, so the fixture refreshes them with Ray's own test helper after setting and after restoring
the variables. The cluster is stopped by signalling the ``ray start`` process this fixture started —
not ``ray stop``, which stops every Ray on the machine. Workers get the repository on ``PYTHONPATH``
so they can import worker functions defined in tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
from ray._private.authentication_test_utils import reset_auth_token_state

REPO = Path(__file__).resolve().parents[1]
NUM_CPUS = 2
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RayCluster:
    address: str
    num_cpus: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A running Ray cluster; this process's environment carries its auth settings for ``ray.init``."""
    temp = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's unix socket paths live under it
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    port = free_port()
    log = temp / "ray_start.log"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN_PATH", str(token))
        env.delenv("RAY_AUTH_TOKEN", raising=False)
        reset_auth_token_state()
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        env.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # propagated to Ray Train's controller
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                    f"--port={port}", f"--num-cpus={NUM_CPUS}", "--num-gpus=0",
                    f"--temp-dir={temp}", "--include-dashboard=false", "--disable-usage-stats",
                    "--node-ip-address=127.0.0.1",
                ],
                env={**os.environ, "PYTHONPATH": str(REPO), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_until_started(process, log)
            yield RayCluster(address=f"127.0.0.1:{port}", num_cpus=NUM_CPUS)
        finally:
            _disconnect()
            _stop(process)
    reset_auth_token_state()  # back to this process's own settings
    shutil.rmtree(temp, ignore_errors=True)


def _wait_until_started(process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`ray start` did not start a cluster:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


def _disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the ``ray start --block`` process (it tears its node down), then kill what is left of its group."""
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture
def on_cluster(ray_cluster: RayCluster, monkeypatch: pytest.MonkeyPatch) -> RayCluster:
    """The session's cluster, named by ``$RAY_ADDRESS`` for the code under test."""
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    return ray_cluster
