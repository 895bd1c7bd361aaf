"""System metrics (CPU, memory, disk, network and, through NVML, every GPU) sampled where training runs.

MLflow samples system metrics in the process that starts a run, which for the stages is the driver: on a
cluster it has no GPU. :class:`NodeSystemMetrics` is built by the driver for a fold's run and shipped to the
Ray Train workers; the first worker of each node samples that node into the run under
``system/node<i>/...`` while the fold trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

from pipeline.environment import tracking_credentials, use_tracking_credentials

SAMPLING_INTERVAL_S = 10.0


@dataclass(frozen=True)
class NodeSystemMetrics:
    """Picklable: the run to sample into and the tracking credentials of the process that built it."""

    tracking_uri: str = field(repr=False)  # may carry a password
    run_id: str
    credentials: Mapping[str, str] = field(default_factory=tracking_credentials, repr=False)

    @contextlib.contextmanager
    def sampling(self, node: int) -> Iterator[None]:
        """Sample this machine as node ``node`` every ``SAMPLING_INTERVAL_S`` seconds until the block ends."""
        use_tracking_credentials(self.credentials)
        monitor = SystemMetricsMonitor(
            self.run_id,
            sampling_interval=SAMPLING_INTERVAL_S,
            node_id=f"node{node}",
            tracking_uri=self.tracking_uri,
        )
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()
