"""Uploads against a real MinIO on loopback: exact bytes, wire headers, retries, outages, bad URLs,
and the whole SampleLogger path (images inlined, input untouched, no secret in logs)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow.parquet as pq
import pytest
from aiohttp import web
from PIL import Image
from prometheus_client import REGISTRY
from upload_s3_helpers import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    FakeFlakyProxy,
    MinioServer,
    RecordingProxy,
    free_port,
    s3_admin_client,
)

from rlrun.runtime.config import SampleUploadConfig
from rlrun.runtime.upload import (
    NOT_INLINED_KEY,
    SampleLogger,
    UploadError,
    presign_s3_put,
    s3_client_from_env,
    stream_put,
)

CAP = 2 * 1024 * 1024
pytestmark = pytest.mark.usefixtures("s3_env")


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _no_sleep(_: float) -> None:
    return None


def _stored(minio: MinioServer, key: str) -> bytes:
    body: bytes = s3_admin_client(minio.endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def _random_file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / f"body_{size}.bin"
    path.write_bytes(os.urandom(size))
    return path


def test_bytes_round_trip_with_content_length_and_no_chunking(minio: MinioServer, tmp_path: Path) -> None:
    path = _random_file(tmp_path, 5 * 1024 * 1024 + 123)  # not a multiple of the chunk size

    async def go() -> None:
        proxy = RecordingProxy(minio.port)
        await proxy.start()
        try:
            url = presign_s3_put(s3_client_from_env(proxy.endpoint, "us-east-1"), BUCKET, "rt/a.parquet")
            result = await stream_put(url, path)
        finally:
            await proxy.stop()
        assert (result.status, result.attempts) == (200, 1)
        headers = proxy.headers()
        assert proxy.heads[-1].startswith(b"PUT /samples/rt/a.parquet?")
        assert headers["content-length"] == str(path.stat().st_size)
        assert "transfer-encoding" not in headers

    run(go())
    assert (
        hashlib.sha256(_stored(minio, "rt/a.parquet")).digest() == hashlib.sha256(path.read_bytes()).digest()
    )


def test_500_then_200_is_retried_and_stored(minio: MinioServer, tmp_path: Path) -> None:
    path = _random_file(tmp_path, 700_000)

    async def go() -> None:
        flaky = FakeFlakyProxy(minio.port, fail_first=1)
        await flaky.start()
        try:
            url = presign_s3_put(s3_client_from_env(flaky.endpoint, "us-east-1"), BUCKET, "retry/b.parquet")
            result = await stream_put(url, path, sleep=_no_sleep)
        finally:
            await flaky.stop()
        assert result.attempts == 2 and len(flaky.heads) == 2

    run(go())
    assert _stored(minio, "retry/b.parquet") == path.read_bytes()


def test_expired_url_is_a_clear_error(minio: MinioServer, tmp_path: Path) -> None:
    path = _random_file(tmp_path, 1000)
    url = presign_s3_put(
        s3_client_from_env(minio.endpoint, "us-east-1"), BUCKET, "exp/c.parquet", expires_s=1
    )
    time.sleep(2.1)
    with pytest.raises(
        UploadError, match=r"HTTP 403 AccessDenied: Request has expired on attempt 1/3"
    ) as info:
        run(stream_put(url, path, sleep=_no_sleep))
    assert not info.value.transient


@pytest.mark.parametrize("tamper", ["signature", "key"])
def test_tampered_url_is_a_clear_error(minio: MinioServer, tmp_path: Path, tamper: str) -> None:
    path = _random_file(tmp_path, 1000)
    url = presign_s3_put(s3_client_from_env(minio.endpoint, "us-east-1"), BUCKET, "tamper/d.parquet")
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    if tamper == "signature":
        url = url.replace(signature, signature[:-1] + ("0" if signature[-1] != "0" else "1"))
    else:
        url = url.replace("tamper/d.parquet", "tamper/other.parquet")
    with pytest.raises(UploadError, match=r"HTTP 403 SignatureDoesNotMatch") as info:
        run(stream_put(url, path, sleep=_no_sleep))
    assert signature not in str(info.value) and "?<redacted>" in str(info.value)


def _failures() -> float:
    return REGISTRY.get_sample_value("rlrun_sample_upload_failures_total") or 0.0


def test_server_down_error_surfaced_parquet_kept_next_step_goes_on(
    minio: MinioServer, tmp_path: Path
) -> None:
    """Step 1 finds the endpoint down; step 2 finds it back (a proxy started on the same port)."""
    port = free_port()
    cfg = SampleUploadConfig(enabled=True, bucket=BUCKET, endpoint_url=f"http://127.0.0.1:{port}")
    out = tmp_path / "out"
    rollouts = [{"example_id": "e", "env": "t", "prompt": [], "completion": "x", "reward": 0.0}]
    before = _failures()

    async def go() -> None:
        logger = SampleLogger(cfg, out, tmp_path, "down", backoff_s=(0.0, 0.0))
        await logger.log_step(1, rollouts)
        [first] = await logger.flush()
        assert not first.logged and "ConnectError" in (first.error or "") and "3/3" in (first.error or "")
        assert [p.name for p in (out / "samples").iterdir()] == ["step_1.parquet"]  # kept for a retry
        proxy = RecordingProxy(minio.port, port=port)
        await proxy.start()
        try:
            await logger.log_step(2, rollouts)
            [second] = await logger.flush()
        finally:
            await proxy.stop()
            await logger.aclose()
        assert second.logged and second.key == "samples/run_down/step_2.parquet"

    run(go())
    assert _failures() == before + 1
    assert [p.name for p in (out / "samples").iterdir()] == ["step_1.parquet"]  # its retry is not due yet
    assert pq.read_table(io.BytesIO(_stored(minio, "samples/run_down/step_2.parquet"))).num_rows == 1


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format=fmt)
    return buf.getvalue()


def test_sample_logger_inlines_images_keeps_input_and_leaks_no_secret(
    minio: MinioServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    asset_root = tmp_path / "outputs"
    images = asset_root / "run_s" / "assets" / "images"
    images.mkdir(parents=True)
    png, jpeg = _encoded("PNG"), _encoded("JPEG")  # only real images are inlined
    (images / "small.png").write_bytes(png)
    (images / "at_cap.jpg").write_bytes(jpeg + b"\x02" * (CAP - len(jpeg)))
    (images / "big.png").write_bytes(png + b"\x03" * (CAP + 1 - len(png)))
    names = ["small.png", "at_cap.jpg", "big.png", "missing.png"]
    parts = [{"type": "image_url", "image_url": {"url": (images / n).as_uri()}} for n in names]
    rollouts = [
        {
            "example_id": f"ex{i}",
            "env": "color-codeword",
            "prompt": [{"role": "user", "content": [*parts, {"type": "text", "text": "colour?"}]}],
            "completion": "red",
            "reward": float(i),
            "advantage": 0.5 - i,
            "num_prompt_tokens": 40,
            "num_completion_tokens": 2,
        }
        for i in range(2)
    ]
    before = copy.deepcopy(rollouts)
    cfg = SampleUploadConfig(enabled=True, bucket=BUCKET, endpoint_url=minio.endpoint, prefix="runs")

    async def go() -> Any:
        logger = SampleLogger(cfg, asset_root / "run_s", asset_root, "s", backoff_s=(0.0, 0.0))
        try:
            return await logger.log_step(3, rollouts)
        finally:
            await logger.aclose()

    with caplog.at_level(logging.DEBUG):
        result = run(go())
    assert result.logged, result.error
    assert rollouts == before
    assert list((asset_root / "run_s" / "samples").iterdir()) == []

    rows = pq.read_table(io.BytesIO(_stored(minio, "runs/run_s/step_3.parquet"))).to_pylist()
    assert [(r["example_id"], r["reward"], r["advantage"]) for r in rows] == [
        ("ex0", 0.0, 0.5),
        ("ex1", 1.0, -0.5),
    ]
    small, at_cap, big, missing = (p["image_url"] for p in json.loads(rows[0]["prompt"])[0]["content"][:4])
    assert small["url"].startswith("data:image/png;base64,iVBO")
    assert at_cap["url"].startswith("data:image/jpeg;base64,") and NOT_INLINED_KEY not in at_cap
    assert big == {"url": (images / "big.png").as_uri(), NOT_INLINED_KEY: f"{CAP + 1} bytes > cap {CAP}"}
    assert missing == {"url": (images / "missing.png").as_uri(), NOT_INLINED_KEY: "missing"}
    assert "missing.png" in caplog.text  # warned

    for secret in (SECRET_KEY, ACCESS_KEY, "X-Amz-Signature=", "X-Amz-Credential="):
        assert secret not in caplog.text, secret


def test_platform_mode_uploads_through_a_presign_endpoint(
    minio: MinioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform signs (here: a loopback aiohttp endpoint signing for MinIO); rlrun only PUTs."""
    monkeypatch.setenv("RLRUN_PRESIGN_TOKEN", "platform-token")
    signer = s3_client_from_env(minio.endpoint, "us-east-1")
    asked: list[dict[str, Any]] = []

    async def presign(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer platform-token":
            return web.Response(status=401)
        asked.append(await request.json())
        return web.json_response({"url": presign_s3_put(signer, BUCKET, asked[-1]["key"])})

    async def go() -> Any:
        app = web.Application()
        app.router.add_post("/presign", presign)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        cfg = SampleUploadConfig(enabled=True, presign_endpoint=f"http://{host}:{port}/presign")
        logger = SampleLogger(cfg, tmp_path / "out", tmp_path, "p")
        try:
            return await logger.log_step(0, [{"prompt": [], "completion": "hi", "env": "t", "reward": 1.0}])
        finally:
            await logger.aclose()
            await runner.cleanup()

    uploaded = REGISTRY.get_sample_value("rlrun_sample_upload_bytes_total") or 0.0
    result = run(go())
    assert result.logged, result.error
    assert asked[0]["key"] == "samples/run_p/step_0.parquet" and asked[0]["sizeBytes"] == result.size_bytes
    assert REGISTRY.get_sample_value("rlrun_sample_upload_bytes_total") == uploaded + result.size_bytes
    table = pq.read_table(io.BytesIO(_stored(minio, "samples/run_p/step_0.parquet")))
    assert table.column("completion").to_pylist() == ["hi"]
