"""Publishing progress: `progress.json` (atomic), `GET /progress` on the status endpoint, optional push.

The operator reads whichever it can reach; the push (RLRUN_PROGRESS_URL + RLRUN_PROGRESS_TOKEN) serves a
platform that cannot poll pods. Push failures are logged, never raised: progress is a side channel.
With several operator replicas the Service may route a push to a standby, which answers 503 and closes the
connection: the push is retried (a new connection, so possibly another replica) a bounded number of times.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import httpx
from aiohttp import web

from rlrun import pod_contract
from rlrun.runtime.config import Progress, read_trainer_startup, write_progress

log = logging.getLogger(__name__)
PUSH_ATTEMPTS = 5
"""Tries per push while the answer is 503 (a standby replica); 5 reach the active one of 2 with p > 0.96."""
PUSH_RETRY_SECONDS = 0.2
PROGRESS_URL_ENV = pod_contract.PROGRESS_URL_ENV
PROGRESS_TOKEN_ENV = pod_contract.PROGRESS_TOKEN_ENV


class ProgressPublisher:
    def __init__(self, run_dir: Path, initial: Progress) -> None:
        self.run_dir = run_dir
        self.current = initial
        self._push_url = os.environ.get(PROGRESS_URL_ENV)
        self._push_token = os.environ.get(PROGRESS_TOKEN_ENV)
        self._client = httpx.AsyncClient(timeout=5.0) if self._push_url and self._push_token else None

    async def publish(self, progress: Progress) -> None:
        progress = progress.model_copy(update={"trainer_startup": read_trainer_startup(self.run_dir)})
        self.current = progress
        write_progress(self.run_dir, progress)
        if self._client is None:
            return
        status = None
        try:
            for attempt in range(PUSH_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(PUSH_RETRY_SECONDS * attempt)
                response = await self._client.post(
                    self._push_url,  # type: ignore[arg-type]
                    content=progress.model_dump_json(by_alias=True),
                    headers={
                        "Authorization": f"Bearer {self._push_token}",
                        "Content-Type": "application/json",
                    },
                )
                status = response.status_code
                if status != 503:
                    break
            if status is not None and status >= 300:
                log.warning("progress push to %s: HTTP %d", self._push_url, status)
        except httpx.HTTPError as exc:
            log.warning("progress push to %s failed: %s", self._push_url, type(exc).__name__)

    def app(self) -> web.Application:
        async def progress(_: web.Request) -> web.Response:
            return web.Response(
                text=self.current.model_dump_json(by_alias=True), content_type="application/json"
            )

        async def health(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/progress", progress)
        app.router.add_get("/health", health)
        return app

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
