"""A real S3-compatible server (MinIO, built by tools/minio/build.sh) for the upload integration tests.

The server runs once per session on a free loopback port with a temp data dir, and is stopped at the end
even when tests fail. There is no skip: if the binary cannot be built, the tests fail and say why.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from upload_s3_helpers import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    MinioServer,
    minio_binary,
    s3_admin_client,
)


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    try:
        binary = minio_binary()
    except Exception as exc:
        pytest.fail(f"no MinIO for the upload integration tests: {exc}", pytrace=False)
    server = MinioServer(binary, tmp_path_factory.mktemp("minio"))
    server.start()
    try:
        s3_admin_client(server.endpoint).create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in the environment, as the orchestrator pod gets them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
