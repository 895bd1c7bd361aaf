"""Where a dataset can come from: a local folder, an archive or an S3-compatible bucket."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pipeline.data import ingest, sources
from pipeline.data.manifest import read_manifest
from pipeline.data.sources import local_folder
from pipeline.errors import DataError
from tests.data.fixtures_busi import params_for

EXPECTED = "data.layout 'busi' expects …"

pytestmark = pytest.mark.usefixtures("scratch")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedMotoServer]:
    """A real S3-compatible HTTP server (moto) on localhost, reached only through the AWS env vars."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: ThreadedMotoServer):
    """A boto3 S3 client of :func:`s3_server`."""
    return boto3.client("s3")


def _upload(client, folder: Path, bucket: str, prefix: str) -> None:
    client.create_bucket(Bucket=bucket)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _records(out: Path) -> list[tuple]:
    return [(r.id, r.label, r.image, r.masks, r.sha256) for r in read_manifest(out).records]


def test_s3_prefix_ingests_to_the_same_records_as_the_folder(busi, tmp_path, s3):
    source, _ = busi
    _upload(s3, source, "scans", "datasets/busi")
    s3.put_object(Bucket="scans", Key="datasets/busi-other/benign/benign (9).png", Body=b"not in prefix")
    ingest.run(params_for(source), out_dir=tmp_path / "from_folder")
    ingest.run(params_for("s3://scans/datasets/busi"), out_dir=tmp_path / "from_s3")
    assert _records(tmp_path / "from_s3") == _records(tmp_path / "from_folder")
    assert read_manifest(tmp_path / "from_s3").source == "s3://scans/datasets/busi"


def test_s3_missing_bucket_or_empty_prefix_names_the_uri(s3):
    s3.create_bucket(Bucket="empty")
    for uri in ("s3://no-such-bucket/busi", "s3://empty/busi"):
        with pytest.raises(DataError, match=f"^{uri}: "), local_folder(uri, EXPECTED):
            pass


def test_s3_key_escaping_the_download_folder_is_rejected(tmp_path, s3):
    s3.create_bucket(Bucket="scans")
    s3.put_object(Bucket="scans", Key="busi/../../escaped.png", Body=b"x")
    with pytest.raises(DataError, match=r"busi/\.\./\.\./escaped\.png"), local_folder("s3://scans/busi", EXPECTED):
        pass
    assert not list(tmp_path.rglob("escaped*"))


def test_unusable_local_source_is_a_data_error(tmp_path):
    text = tmp_path / "busi.txt"
    text.write_text("not a dataset")
    cases = ((tmp_path / "nothing", "no such folder or archive"), (text, "not a folder or a"))
    for source, expected in cases:
        with pytest.raises(DataError, match=f"data.source: {source}: {expected}"), local_folder(str(source), EXPECTED):
            pass


def test_corrupt_archive_is_a_data_error(tmp_path):
    archive = tmp_path / "busi.zip"
    archive.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=f"{archive}: unreadable archive"), local_folder(str(archive), EXPECTED):
        pass


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_s3_endpoint_gone_down_fails_ingest_in_seconds_naming_it_and_keeps_the_output(
    busi, tmp_path, s3_server, s3, scratch
):
    _upload(s3, busi[0], "scans", "datasets/busi")
    out = tmp_path / "ingested"
    ingest.run(params_for("s3://scans/datasets/busi"), out_dir=out)
    before = _digests(out)
    s3_server.stop()
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        ingest.run(params_for("s3://scans/datasets/busi"), out_dir=out)
    assert time.monotonic() - started < 10
    assert str(error.value).startswith(
        f"s3://scans/datasets/busi: no answer from the S3 endpoint {os.environ['AWS_ENDPOINT_URL']} after 3 tries"
    )
    assert _digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ingested")) == []  # no temporary output
    assert list(scratch.iterdir()) == []  # nothing downloaded is left


def test_s3_endpoint_that_never_answers_is_given_up_after_the_bounded_tries(tmp_path, monkeypatch, s3_server):
    """A host that accepts connections but never answers (a hung proxy or server) costs S3_ATTEMPTS read
    timeouts, not botocore's default of 5 tries of 60 s."""
    silent = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listening socket is closed at the end of the test
            while True:
                accepted.append(silent.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setattr(sources, "S3_READ_TIMEOUT_S", 0.5)
    started = time.monotonic()
    with (
        pytest.raises(
            DataError,
            match=f"^s3://scans/busi: no answer from the S3 endpoint {endpoint} after 3 tries "
            r"\(ReadTimeoutError\)",
        ),
        local_folder("s3://scans/busi", EXPECTED),
    ):
        pass
    assert time.monotonic() - started < 10
    assert len(accepted) == sources.S3_ATTEMPTS == 3
    silent.close()
    for connection in accepted:
        connection.close()
