"""stream_put against a real aiohttp server on loopback: headers, retries that re-stream, redaction."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest
from aiohttp import web
from upload_helpers import Sink, run, serve

from rlrun.runtime.upload.put import UploadError, redact_text, redact_url, stream_put

SECRET_QUERY = "X-Amz-Signature=deadbeefcafe&X-Amz-Credential=AKIDSECRET"


def _file(tmp_path: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path = tmp_path / "body.parquet"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


async def _no_sleep(_: float) -> None:
    return None


def test_put_sends_content_length_never_chunked(tmp_path: Path) -> None:
    path, digest = _file(tmp_path, 2_600_000)  # several chunks, the last one partial
    sink = Sink()

    async def go() -> None:
        async with serve(sink.handle) as base:
            result = await stream_put(f"{base}/bucket/key?{SECRET_QUERY}", path)
        assert (result.status, result.bytes_sent, result.attempts) == (200, 2_600_000, 1)

    run(go())
    [seen] = sink.seen
    assert seen.headers["Content-Length"] == "2600000"
    assert "Transfer-Encoding" not in seen.headers
    assert seen.headers["Content-Type"] == "application/parquet"
    assert (seen.size, seen.sha256) == (2_600_000, digest)


def test_5xx_is_retried_by_restreaming_the_whole_file(tmp_path: Path) -> None:
    path, digest = _file(tmp_path, 300_000)
    sink = Sink(fail_first=2)
    delays: list[float] = []

    async def record_sleep(delay: float) -> None:
        delays.append(delay)

    async def go() -> None:
        async with serve(sink.handle) as base:
            result = await stream_put(f"{base}/k?{SECRET_QUERY}", path, sleep=record_sleep)
        assert result.attempts == 3

    run(go())
    assert delays == [1.0, 2.0]
    assert [(s.size, s.sha256) for s in sink.seen] == [(300_000, digest)] * 3


def test_gives_up_after_three_attempts_with_redacted_error(tmp_path: Path) -> None:
    path, _ = _file(tmp_path, 1000)
    sink = Sink(fail_first=99)

    async def go() -> None:
        async with serve(sink.handle) as base:
            with pytest.raises(UploadError) as info:
                await stream_put(f"{base}/k?{SECRET_QUERY}", path, sleep=_no_sleep)
        assert info.value.status == 500 and info.value.transient
        assert "HTTP 500 InternalError on attempt 3/3" in str(info.value)
        assert "deadbeef" not in str(info.value) and "?<redacted>" in str(info.value)

    run(go())
    assert len(sink.seen) == 3


def test_4xx_is_final_at_once(tmp_path: Path) -> None:
    path, _ = _file(tmp_path, 1000)

    async def forbidden(request: web.Request) -> web.Response:
        await request.read()
        body = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
        return web.Response(status=403, text=body)

    async def go() -> None:
        async with serve(forbidden) as base:
            expected = "HTTP 403 AccessDenied: Request has expired on attempt 1/3"
            with pytest.raises(UploadError, match=expected):
                await stream_put(f"{base}/k?{SECRET_QUERY}", path, sleep=_no_sleep)

    run(go())


def test_connection_refused_is_transient_and_redacted(tmp_path: Path) -> None:
    path, _ = _file(tmp_path, 1000)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UploadError, match=r"ConnectError") as info:
        run(stream_put(f"http://127.0.0.1:{port}/k?{SECRET_QUERY}", path, sleep=_no_sleep))
    assert info.value.transient and "deadbeef" not in str(info.value) and "3/3" in str(info.value)


def test_redaction() -> None:
    url = f"https://user:pw@r2.example.com/b/k.parquet?{SECRET_QUERY}#frag"
    assert redact_url(url) == "https://r2.example.com/b/k.parquet?<redacted>"
    assert redact_url("http://h/p") == "http://h/p"
    text = f"PUT 'https://h/b/k?{SECRET_QUERY}' failed; see http://docs/x"
    assert redact_text(text) == "PUT 'https://h/b/k?<redacted>' failed; see http://docs/x"
