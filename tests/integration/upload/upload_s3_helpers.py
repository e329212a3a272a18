"""Helpers for the upload integration tests: a real MinIO server process, and TCP proxies that sit
between the client and it (one records what went over the wire, one is a fake that injects a 500)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "tools" / "minio" / "build.sh"
ACCESS_KEY = "rlrun-test-key"
SECRET_KEY = "rlrun-test-secret-0123456789"
BUCKET = "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def minio_binary() -> Path:
    """The MinIO binary: $RLRUN_MINIO_BIN, else built (or reused from the cache) by tools/minio/build.sh."""
    done = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3000, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class MinioServer:
    """A MinIO process on a loopback port with a temp data dir; `stop()` leaves no process behind."""

    binary: Path
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.data_dir),
            "MINIO_ROOT_USER": ACCESS_KEY,
            "MINIO_ROOT_PASSWORD": SECRET_KEY,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "GOMAXPROCS": "2",
        }
        log = open(self.data_dir / "minio.log", "wb")  # noqa: SIM115 - owned by the process
        args = [str(self.binary), "server", str(self.data_dir / "data"), "--quiet"]
        args += ["--address", f"127.0.0.1:{self.port}", "--console-address", f"127.0.0.1:{free_port()}"]
        self.proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"minio exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.endpoint}/minio/health/live", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"minio not healthy within {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.data_dir / "minio.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def s3_admin_client(endpoint: str) -> Any:
    """A botocore client with the root credentials, for setting up buckets and reading objects back."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


class RecordingProxy:
    """A TCP pass-through to `upstream_port` on loopback that records each connection's request head.

    Presign URLs for the proxy's own address: the signed Host header then matches what MinIO receives.
    """

    def __init__(self, upstream_port: int, port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.port = port
        self.heads: list[bytes] = []
        self._server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def headers(self, index: int = -1) -> dict[str, str]:
        """The recorded request's headers, names lower-cased."""
        lines = self.heads[index].decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head[:-4])
        return head

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await self._read_head(reader)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(head)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class FakeFlakyProxy(RecordingProxy):
    """Fault injection a real server cannot do on cue: answers the first `fail_first` requests with
    HTTP 500 (after reading the whole body, as a sick server would), then passes everything through."""

    def __init__(self, upstream_port: int, fail_first: int = 1) -> None:
        super().__init__(upstream_port)
        self.fail_first = fail_first

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.heads) >= self.fail_first:
            await super()._handle(reader, writer)
            return
        try:
            await self._read_head(reader)
            await reader.readexactly(int(self.headers().get("content-length", "0")))
            body = b"<Error><Code>InternalError</Code><Message>injected by FakeFlakyProxy</Message></Error>"
            writer.write(
                b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
