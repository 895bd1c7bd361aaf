"""Atomic outputs: write to a sibling temporary path, then rename over the target.

A stage that fails half-way therefore leaves the previous artifact untouched, and no temporary file or
folder behind. Running out of space (a full device, ENOSPC, or a spent disk quota, EDQUOT) while writing
an output raises :class:`~pipeline.errors.OutputError`, one line naming the output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import OutputError

_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def _shareable(path: Path, mode: int) -> None:
    """Give a temp file/dir the permissions a plain ``open``/``mkdir`` would (mkstemp uses 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def _space_reported(target: Path) -> Iterator[None]:
    """Re-raise running out of space in the block (an OSError ENOSPC or EDQUOT, or the OutputError of an
    output written inside ``target``) as one OutputError naming ``target``; the block has cleaned up by then."""
    try:
        yield
    except (OSError, OutputError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if not isinstance(cause, OSError) or cause.errno not in _NO_SPACE:
            raise
        kept = "its previous version is unchanged" if target.exists() else "nothing was written there"
        raise OutputError(f"{target}: {_NO_SPACE[cause.errno]} while writing it; {kept}") from cause


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` when the block succeeds.

    On an exception the temporary directory is removed and ``target`` is left as it was; running out of
    space raises OutputError naming ``target``.
    """
    target = Path(target)
    with _space_reported(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        _shareable(tmp, 0o777)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``; running out
    of space raises OutputError naming ``path``."""
    path = Path(path)
    with _space_reported(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            _shareable(Path(tmp), 0o666)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (stable bytes for identical content)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
