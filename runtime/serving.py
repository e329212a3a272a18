"""Serving a role's aiohttp app until SIGTERM/SIGINT: shared by inference and env-worker servers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)


def write_ready_file(path: Path, host: str, port: int) -> None:
    """Atomically publish where the server listens (temp file + rename: never read half-written).

    `rlrun local` starts roles on port 0 and learns their addresses from these files."""
    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": f"http://{url_host}:{port}", "port": port, "pid": os.getpid()}))
    os.replace(tmp, path)


async def serve(app: web.Application, host: str, port: int, ready_file: Path | None, role: str) -> None:
    """Listen until SIGTERM/SIGINT, then shut down cleanly."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    log.info("%s listening on %s:%d", role, host, bound)
    if ready_file:
        write_ready_file(ready_file, host, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
