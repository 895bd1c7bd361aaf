"""How much a stage says, on a terminal and in a log file.

A person reads a run's output in two places. On a terminal: progress bars with rate and ETA (data stages), Ray
Tune's live trial table, and one line per epoch. In a log file (``make run > log 2>&1``): no bars, one line per
stage step (``augment: 1350 img in 8.2 s, 165 img/s``) and per epoch (losses, task weights, temperature,
validation Dice/accuracy), so the one error line is easy to find. Ray's, Ray Train's and MLflow's own
chatter (a line per checkpoint, a metrics dict per report, system-metrics notices) stays at warning level
unless asked for: ``--verbose`` on the command line, or ``MTL_VERBOSE=1`` in the environment, which the
stages' processes and the local Ray's workers inherit.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

VERBOSE_ENV = "MTL_VERBOSE"

# What the libraries read from the environment (Ray's workers inherit it from the driver that starts Ray):
QUIET_LIBRARIES = {
    # Ray Train's own loggers then follow ray.init's level (ray_log_level), and a print in a worker is
    # forwarded once instead of twice (printed and re-logged).
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def is_verbose() -> bool:
    """Whether the libraries' informational messages are wanted (``MTL_VERBOSE`` set to 1/true/yes)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def configure(verbose: bool = False) -> None:
    """Set this process's (and its children's) verbosity before Ray or MLflow is imported: ``verbose`` (the
    ``--verbose`` flag) sets ``MTL_VERBOSE=1``; otherwise the libraries are quietened unless the environment
    already asks for them (a variable the user set is kept)."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    # MLflow prints each ended run's URL, the tracking URI's password included: never.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Ray folds worker lines that differ only in their numbers into one "[repeated Nx across cluster]": the
    # epoch lines of concurrent sweep trials would vanish. Every line is printed.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not is_verbose():
        for name, value in QUIET_LIBRARIES.items():
            os.environ.setdefault(name, value)


def ray_log_level() -> str:
    """The level of Ray's loggers in the driver and in every worker of the job (``ray.init(logging_config=…)``)."""
    return "INFO" if is_verbose() else "WARNING"


def on_terminal() -> bool:
    """Whether standard error is a terminal (where progress bars redraw) rather than a file or a pipe."""
    return sys.stderr.isatty()


class Progress:
    """Counts items done; see :func:`progress`."""

    def __init__(self, bar):
        self._bar = bar
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)


@contextmanager
def progress(desc: str, unit: str, total: int | None = None) -> Iterator[Progress]:
    """A tqdm bar (rate, ETA when ``total`` is known) on a terminal; in a log, one line when the step ends:
    ``"<desc>: <n> <unit> in <s> s, <rate> <unit>/s"``."""
    started = time.perf_counter()
    if on_terminal():
        from tqdm import tqdm

        with tqdm(total=total, desc=desc, unit=unit) as bar:
            yield Progress(bar)
        return
    counter = Progress(None)
    yield counter
    elapsed = time.perf_counter() - started
    print(
        f"{desc}: {counter.done} {unit} in {elapsed:.1f} s, {counter.done / max(elapsed, 1e-9):.0f} {unit}/s",
        file=sys.stderr,
        flush=True,
    )
