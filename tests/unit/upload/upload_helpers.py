"""Helpers for the upload unit tests: tiny images on disk and real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format=fmt)
    return buf.getvalue()


# Real (tiny) images: the inliner checks the header and inlines only bytes that are an image.
PNG = _encoded("PNG")
JPEG = _encoded("JPEG")


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    """Run a test coroutine with a bound on how long it may take."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def image_part(path: Path) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": path.as_uri()}}


def rollout(example_id: str, images: list[Path], completion: Any = "a red square") -> dict[str, Any]:
    content = [*(image_part(p) for p in images), {"type": "text", "text": "What colour?"}]
    return {
        "example_id": example_id,
        "env": "color-codeword",
        "prompt": [{"role": "user", "content": content}],
        "completion": completion,
        "reward": 1.0,
        "advantage": 0.5,
        "num_prompt_tokens": 12,
        "num_completion_tokens": 3,
    }


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    size: int
    sha256: str


@dataclass
class Sink:
    """A real HTTP server that stores PUT bodies; `fail_first` answers 500 to that many requests first
    (the fault-injecting part: a real object store cannot be made to fail on cue)."""

    fail_first: int = 0
    stall: bool = False  # read part of the body, then hang (for cancellation tests)
    seen: list[Seen] = field(default_factory=list)
    got_request: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends a stall

    async def handle(self, request: web.Request) -> web.Response:
        self.got_request.set()
        if self.stall:
            await request.content.read(1024)
            await asyncio.wait_for(self.release.wait(), 10)
            return web.Response(status=503)
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.headers),
                len(body),
                hashlib.sha256(body).hexdigest(),
            )
        )
        if len(self.seen) <= self.fail_first:
            return web.Response(status=500, text="<Error><Code>InternalError</Code></Error>")
        return web.Response(status=200)


@asynccontextmanager
async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], method: str = "PUT"
) -> AsyncIterator[str]:
    """Serve `handler` for every path on a free loopback port; yields the base URL."""
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route(method, "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
