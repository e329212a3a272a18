"""Stream a file to a presigned PUT URL: explicit Content-Length, bounded chunks, retries that re-read.

Why each choice:
* Content-Length is set explicitly. Given a body iterator without it, httpx falls back to chunked transfer
  encoding, which S3 and MinIO reject on presigned PUTs.
* The body is an async iterator of 1 MiB chunks read from disk, so memory stays flat whatever the file
  size and each TLS write is small (one big body made OpenSSL fail to allocate on tight pods).
* A write timeout of 600 s: a slow link must be allowed to drain a large file; connect/pool fail fast.
* Transient failures (5xx, timeouts, connection resets) are retried with backoff; each attempt opens the
  file afresh, which rewinds the body.
* Presigned URLs are bearer credentials: every log line and error shows them with the query removed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

log = logging.getLogger(__name__)

# Measured (bench/bench_upload.py, 1 GiB to a loopback sink, medians of 3 rounds): 64 KiB chunks reach 50% of
# sendfile, 1 MiB 108% with ~7 MB RSS growth, 4 MiB 142% but 12.5-16.4 MB (at the 16 MB bound), 8 MiB 25 MB.
CHUNK_BYTES = 1 << 20
PUT_TIMEOUT = httpx.Timeout(connect=30.0, write=600.0, read=300.0, pool=30.0)
ATTEMPTS = 3
BACKOFF_S = (1.0, 2.0)  # sleeps before the 2nd and 3rd attempts
CONTENT_TYPE = "application/parquet"


class UploadError(RuntimeError):
    """An upload that did not store the object. `transient` tells whether retrying later may help."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


@dataclass(frozen=True, slots=True)
class PutResult:
    status: int
    bytes_sent: int
    attempts: int


_URL = re.compile(r"(?P<base>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>]*")


def redact_url(url: str) -> str:
    """`url` without query string, fragment or user info: what is safe to show in logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_text(text: str) -> str:
    """Replace the query string of every URL inside free text (exception messages, log lines)."""
    return _URL.sub(lambda m: f"{m.group('base')}?<redacted>", text)


class RedactingFilter(logging.Filter):
    """Rewrites a logger's records so URL query strings (signatures, credentials) never reach a handler.

    httpx logs every request URL at INFO, presigned query included; this filter sits on that logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction(names: Sequence[str] = ("httpx", __name__)) -> None:
    """Attach one RedactingFilter to each named logger (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def _s3_error(body: bytes) -> str:
    """`Code: Message` from an S3 XML error body (never the rest: it may echo the request)."""
    text = body[:4096].decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]{1,100})</Code>", text)
    message = re.search(r"<Message>([^<]{1,300})</Message>", text)
    if not code:
        return text[:200].strip() if "<" not in text else ""
    return f"{code.group(1)}: {message.group(1) if message else ''}".rstrip(": ")


async def _file_chunks(path: Path, size: int, chunk_bytes: int) -> AsyncIterator[bytes]:
    """Exactly `size` bytes of `path`, from the start; fails loudly if the file shrank meanwhile."""
    sent = 0
    with open(path, "rb") as f:
        while sent < size:
            chunk = f.read(min(chunk_bytes, size - sent))
            if not chunk:
                raise UploadError(f"{path} shrank to {sent} bytes while uploading {size}")
            sent += len(chunk)
            yield chunk


async def stream_put(
    url: str,
    path: Path,
    *,
    client: httpx.AsyncClient | None = None,
    content_type: str = CONTENT_TYPE,
    attempts: int = ATTEMPTS,
    backoff_s: Sequence[float] = BACKOFF_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    chunk_bytes: int = CHUNK_BYTES,
    timeout: httpx.Timeout = PUT_TIMEOUT,
) -> PutResult:
    """PUT the file at `path` to `url`, streamed from disk. Raises UploadError (URL redacted) when the
    object was not stored after `attempts` tries; a 4xx is final at once (retrying cannot fix a bad or
    expired signature)."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    install_log_redaction()
    size = path.stat().st_size
    shown = redact_url(url)
    headers = {"Content-Type": content_type, "Content-Length": str(size)}
    own_client = client is None
    client = client or httpx.AsyncClient()
    try:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await client.put(
                    url, content=_file_chunks(path, size, chunk_bytes), headers=headers, timeout=timeout
                )
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                error = UploadError(
                    f"PUT {shown} ({size} bytes) failed on attempt {attempt}/{attempts}: "
                    f"{type(exc).__name__}: {redact_text(str(exc)) or 'no detail'}",
                    transient=True,
                )
            else:
                if response.is_success:
                    return PutResult(status=response.status_code, bytes_sent=size, attempts=attempt)
                detail = _s3_error(response.content)
                error = UploadError(
                    f"PUT {shown} ({size} bytes) rejected with HTTP {response.status_code}"
                    f"{f' {detail}' if detail else ''} on attempt {attempt}/{attempts}",
                    status=response.status_code,
                    transient=response.status_code >= 500 or response.status_code in (408, 429),
                )
            if not error.transient or attempt == attempts:
                raise error
            delay = backoff_s[min(attempt - 1, len(backoff_s) - 1)] if backoff_s else 0.0
            log.warning("%s; retrying in %.1f s", error, delay)
            await sleep(delay)
    finally:
        if own_client:
            await client.aclose()
