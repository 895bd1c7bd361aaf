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

from infra.local.stack import free_port

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
"""The ``ray`` command of the test environment."""
NUM_CPUS = 2
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RayCluster:
    address: str
    num_cpus: int


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A running Ray cluster; this process's environment carries its auth settings for ``ray.init``."""
    temp = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's unix socket paths live under it
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN_PATH", str(_new_token(temp)))
        env.delenv("RAY_AUTH_TOKEN", raising=False)
        reset_auth_token_state()
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        env.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # propagated to Ray Train's controller
        process = _start_node(
            ["--head", f"--port={port}", f"--num-cpus={NUM_CPUS}", f"--temp-dir={temp}", "--include-dashboard=false"],
            dict(os.environ),
            temp / "ray_start.log",
        )
        try:
            yield RayCluster(address=f"127.0.0.1:{port}", num_cpus=NUM_CPUS)
        finally:
            _disconnect()
            _stop(process)
    reset_auth_token_state()  # back to this process's own settings
    shutil.rmtree(temp, ignore_errors=True)


@dataclass(frozen=True)
class TwoNodeCluster:
    address: str
    """The head's GCS ``host:port``."""
    dashboard: str
    """The head's dashboard (job and state API) URL."""
    env: dict[str, str]
    """An environment for ``ray`` / ``mtl-pipeline`` commands against this cluster (its auth token)."""


@pytest.fixture
def two_node_cluster() -> Iterator[TwoNodeCluster]:
    """A head node and a second node (``ray start --address``), one CPU each, with the job server on.

    Its own token, handed to commands through :attr:`TwoNodeCluster.env`: this process may be connected
    to the session's cluster, whose auth settings must stay as they are. The nodes' ``PATH`` starts
    with this interpreter's folder, so a job's ``python`` is the test environment's.
    """
    temp = Path(tempfile.mkdtemp(prefix="ray2-"))
    port, dashboard_port = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(_new_token(temp)),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    nodes = []
    try:
        nodes.append(
            _start_node(
                [
                    "--head",
                    f"--port={port}",
                    "--num-cpus=1",
                    f"--temp-dir={temp}",
                    "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dashboard_port}",
                ],
                env,
                temp / "head.log",
            )
        )
        # A folder of its own, as on a real second machine: nodes sharing one would unpack a job's
        # working directory into the same place, each replacing it while the other's processes read it.
        nodes.append(
            _start_node(
                [f"--address=127.0.0.1:{port}", "--num-cpus=1", f"--temp-dir={temp / 'node2'}"],
                env,
                temp / "worker.log",
            )
        )
        cluster = TwoNodeCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", env)
        _wait_for_job_server(cluster)
        yield cluster
    finally:
        for process in reversed(nodes):
            _stop(process)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_job_server(cluster: TwoNodeCluster) -> None:
    """Submit no-op jobs until one succeeds: the job server answers 'No available agent' (HTTP 500)
    until the head's dashboard agent has registered, which takes a while on a busy machine."""
    deadline = time.monotonic() + START_TIMEOUT_S
    command = [RAY, "job", "submit", f"--address={cluster.address}", "--", "python", "-c", "pass"]
    while (done := subprocess.run(command, env=cluster.env, capture_output=True, text=True)).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray job server did not take a job:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        time.sleep(1)


def _new_token(folder: Path) -> Path:
    token = folder / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    return token


def _start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``ray start --block <args>`` on loopback, CPU only, in a session of its own; returns once it runs.

    The dashboard agent gets a free port: its default (52365) is taken by any other Ray node on the
    machine, and a node without an agent cannot take jobs."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                RAY,
                "start",
                "--block",
                *args,
                "--num-gpus=0",
                "--disable-usage-stats",
                "--node-ip-address=127.0.0.1",
                f"--dashboard-agent-listen-port={free_port()}",
            ],
            env={**env, "PYTHONPATH": str(REPO), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_started(process, log)
    except BaseException:
        _stop(process)
        raise
    return process


def _wait_until_started(process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`ray start` did not start a cluster:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Disconnect from any Ray still joined (a local Ray a test's code started in this process) while the
    interpreter is whole, rather than in Ray's atexit hook during its shutdown."""
    _disconnect()


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
