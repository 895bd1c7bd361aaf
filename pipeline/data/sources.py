"""Resolve ``data.source`` (a local folder, a .zip/.tar.gz/.tgz archive or ``s3://bucket/prefix``)
into a local folder for the duration of a ``with`` block.

Archives are checked entry by entry *before* anything is extracted: an absolute path, a ``..``
component or a link pointing outside the extraction folder raises DataError naming the archive
and the entry. S3 objects are downloaded with ``boto3.client("s3")``, which takes the endpoint
(``AWS_ENDPOINT_URL``), credentials and region from the standard AWS environment and profile. An endpoint
that is down or silent fails after :data:`S3_ATTEMPTS` tries, each bounded by :data:`S3_CONNECT_TIMEOUT_S` and
:data:`S3_READ_TIMEOUT_S` (botocore's defaults would retry for minutes), naming the URI and the endpoint;
what was downloaded by then is removed with its temporary folder, so no output is touched.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import boto3
import botocore.exceptions
from boto3.exceptions import Boto3Error, RetriesExceededError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError

from pipeline.errors import DataError

_ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
S3_ATTEMPTS = 3
"""Tries of each S3 request, the first included (standard retry mode), before an endpoint that does not answer
fails ingest."""
S3_CONNECT_TIMEOUT_S = 5.0
S3_READ_TIMEOUT_S = 30.0
"""Per try: the seconds to open a connection, and to wait for each read of an answer (not a whole download)."""
_NO_ANSWER = (botocore.exceptions.ConnectionError, HTTPClientError, RetriesExceededError)
"""Refused, timed out or dropped connections: the endpoint is down, unreachable or silent."""


@contextlib.contextmanager
def local_folder(source: str, expected: str) -> Iterator[Path]:
    """Yield a local folder holding the contents of ``source``; temporary copies are removed after.

    A local folder is yielded as it is; an archive is extracted and an S3 prefix downloaded into a
    temporary folder. ``expected`` (one line: the layout the folder should have) ends the error when
    ``source`` does not exist, is neither a folder nor an archive, or is an empty S3 prefix.
    """
    if source.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="mtl-s3-") as tmp:
            _download_s3(source, Path(tmp), expected)
            yield Path(tmp)
        return
    path = Path(source)
    if path.is_dir():
        yield path
    elif path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES):
        with tempfile.TemporaryDirectory(prefix="mtl-archive-") as tmp:
            _extract(path, Path(tmp))
            yield Path(tmp)
    elif path.exists():
        raise DataError(f"data.source: {source}: not a folder or a {'/'.join(_ARCHIVE_SUFFIXES)} archive ({expected})")
    else:
        raise DataError(f"data.source: {source}: no such folder or archive ({expected})")


def _check_name(where: object, name: str) -> None:
    """Raise DataError if entry ``name`` of archive/URI ``where`` is absolute or has a ``..`` part."""
    posix = PurePosixPath(name)
    if posix.is_absolute() or ".." in posix.parts:
        raise DataError(f"{where}: entry {name!r} would be written outside the target folder")


def _extract(archive: Path, dest: Path) -> None:
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DataError(f"{archive}: unreadable archive ({exc})") from None


def _extract_zip(archive: Path, dest: Path) -> None:
    """Zip symlink entries are written as plain files by :mod:`zipfile`, so only names are checked."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_name(archive, info.filename)
        zf.extractall(dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    """Check names ourselves (the ``data`` filter silently strips a leading ``/``), then links and
    special files with :func:`tarfile.data_filter`, then extract with that filter."""
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for member in members:
            _check_name(archive, member.name)
            try:
                tarfile.data_filter(member, str(dest))
            except tarfile.FilterError as exc:
                raise DataError(f"{archive}: entry {member.name!r} rejected: {exc}") from None
        tf.extractall(dest, members=members, filter="data")


def _download_s3(uri: str, dest: Path, expected: str) -> None:
    """Download every object under ``s3://bucket/prefix`` into ``dest``, keeping relative keys; ``expected``
    ends the error for an empty prefix."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise DataError(f"data.source: {uri}: expected s3://bucket/prefix")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    count = 0
    try:
        client = boto3.client(
            "s3",
            config=Config(
                connect_timeout=S3_CONNECT_TIMEOUT_S,
                read_timeout=S3_READ_TIMEOUT_S,
                retries={"mode": "standard", "total_max_attempts": S3_ATTEMPTS},
            ),
        )
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                relative = obj["Key"][len(prefix) :]
                if not relative or relative.endswith("/"):
                    continue
                _check_name(uri, obj["Key"])
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], os.fspath(target))
                count += 1
    except _NO_ANSWER as exc:
        raise DataError(
            f"{uri}: no answer from the S3 endpoint {client.meta.endpoint_url} after {S3_ATTEMPTS} tries "
            f"({type(exc).__name__}); is it up, and is AWS_ENDPOINT_URL right?"
        ) from None
    except (BotoCoreError, ClientError, Boto3Error) as exc:
        raise DataError(f"{uri}: cannot read from S3 ({exc})") from None
    if count == 0:
        raise DataError(f"{uri}: no objects under this prefix ({expected})")
