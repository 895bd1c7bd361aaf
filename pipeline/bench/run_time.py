"""``make run``'s wall time per stage: recorded by the run, reported by ``make bench`` against ≤ 9 minutes.

:func:`record` (``mtl-pipeline time-stages [--since T] -- dvc repro``, what ``make run`` runs) passes the
command's output through unchanged (on a terminal, through a pseudo-terminal) and splits its wall clock at DVC's ``Running stage '<name>':`` lines;
``setup`` is the time from ``since`` (when ``make`` started: the install, ``dvc init``) to the command's
start. The record is written atomically, and only when the command succeeded, so a failed or interrupted run
leaves the last complete one in place. :func:`run` (the bench part ``make_run``) reads it: the target applies
to a complete run (no stage skipped by DVC as unchanged) of the commit checked out.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.atomic import atomic_write_json
from pipeline.errors import PipelineError
from pipeline.tracking.lineage import git_state

RECORD = paths.REPORTS / "run_time.json"
TARGET_S = 540.0
"""Issue 17: the default ``make run`` in at most 9 minutes on 2 cores, install included."""
RUNNING = re.compile(r"Running stage '([^']+)':")
SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")


def record(command: Sequence[str], since: float | None = None, out: Path = RECORD) -> dict[str, Any]:
    """Run ``command`` through :func:`run_echoing` and on success write to ``out``: ``setup_s`` (``since`` → start,
    ``since`` in epoch seconds; 0 without it), ``stages`` (in the order they ran, each ``{"stage", "seconds"}``),
    ``total_s`` (``since`` or the start → the end), the stages DVC ``skipped``, the ``commit`` and whether tracked
    files were modified (``dirty``) at the start, and the CPU count. A non-zero exit raises :class:`PipelineError`
    and leaves ``out`` as it was."""
    started = time.time()
    commit, dirty = git_state()  # before the run, which rewrites dvc.lock and the tracked metrics
    marks: list[tuple[str, float]] = []
    skipped: list[str] = []

    def seen(line: str) -> None:
        if m := RUNNING.search(line):
            marks.append((m.group(1), time.time()))
        elif m := SKIPPED.search(line):
            skipped.append(m.group(1))

    status = run_echoing(command, seen, terminal=sys.stdout.isatty())
    ended = time.time()
    if status != 0:
        raise PipelineError(f"{' '.join(command)} exited with status {status}; {out} keeps the last complete record")
    ends = [t for _, t in marks[1:]] + [ended]
    result = {
        "command": list(command),
        "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": dirty == "true",
        "cpus": os.cpu_count(),
        "setup_s": started - since if since is not None else 0.0,
        "stages": [{"stage": name, "seconds": end - t} for (name, t), end in zip(marks, ends, strict=True)],
        "skipped": skipped,
        "total_s": ended - (since if since is not None else started),
    }
    atomic_write_json(out, result)
    return result


def run_echoing(command: Sequence[str], on_line: Callable[[str], None], terminal: bool) -> int:
    """Run ``command``, copy its output (stdout and stderr) to ours as it comes and call ``on_line`` on each of its
    lines (split at ``\\n`` and ``\\r``); returns its exit status.

    With ``terminal`` the command writes to a pseudo-terminal of our terminal's size, so its progress bars and
    Ray Tune's live table draw as they would without us. Reading stops once the command has exited and its
    output is drained, even if a process it started still holds the output open.
    """
    if terminal:
        reader, writer = pty.openpty()
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(sys.stdout.fileno(), termios.TIOCGWINSZ, bytes(8))
            fcntl.ioctl(writer, termios.TIOCSWINSZ, size)
    else:
        reader, writer = os.pipe()
    env = os.environ | {"PYTHONUNBUFFERED": "1"}  # stage lines reach us when they are printed, not at a flush
    process = subprocess.Popen(list(command), stdout=writer, stderr=writer, env=env)
    os.close(writer)
    pending = b""
    try:
        while True:
            ready = select.select([reader], [], [], 0.2)[0]
            chunk = b""
            if ready:
                with contextlib.suppress(OSError):  # EIO: the pseudo-terminal's last writer has closed it
                    chunk = os.read(reader, 1 << 16)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                *lines, pending = re.split(rb"[\r\n]", pending + chunk)
                for line in lines:
                    on_line(line.decode(errors="replace"))
            elif ready or process.poll() is not None:
                break
    finally:
        os.close(reader)
        process.wait()
    if pending:
        on_line(pending.decode(errors="replace"))
    return process.returncode


def run(record_path: Path = RECORD) -> dict[str, Any]:
    """The bench part: the record at ``record_path`` with ``recorded`` (False when there is none), ``complete``
    (every stage ran) and ``current`` (it was made at the commit checked out, with no tracked file modified when it
    started)."""
    if not record_path.is_file():
        return {"recorded": False, "record": str(record_path)}
    recorded = json.loads(record_path.read_text(encoding="utf-8"))
    return recorded | {
        "recorded": True,
        "record": str(record_path),
        "complete": bool(recorded["stages"]) and not recorded["skipped"],
        "current": recorded["commit"] == git_state()[0] and not recorded["dirty"],
    }


def table(results: dict[str, Any]) -> list[str]:
    if not results["recorded"]:
        return [f"no record at {results['record']}: `make run` writes it"]
    state = "complete" if results["complete"] else f"partial ({len(results['skipped'])} stages skipped by DVC)"
    if not results["current"]:
        state += f", made at commit {results['commit'][:7]}{' (modified)' if results['dirty'] else ''}, not HEAD"
    lines = [f"make run of {results['recorded_at']}, {results['cpus']} CPUs: {state}"]
    lines.append(f"  {'setup (install, dvc init)':28s} {results['setup_s']:7.1f} s")
    lines += [f"  {s['stage']:28s} {s['seconds']:7.1f} s" for s in results["stages"]]
    lines.append(f"  {'total':28s} {results['total_s']:7.1f} s (target <= {TARGET_S:.0f} s)")
    return lines
