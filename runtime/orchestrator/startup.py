"""The orchestrator's start-up: wait, within a bound, until the servers it drives answer `/health`.

Every pod of a run is created at once, and the inference server needs from seconds (CPU engine) to minutes
(vLLM) before it listens. The orchestrator's first request used to fail with a connection error and spend
a counted restart on that race. Now the components come up in a defined order — inference first (the
env-workers call it), then the env-workers — and waiting for them is bounded by
`orchestrator.startupTimeoutSeconds`; only running out of that bound fails the orchestrator, with a message
naming the component and URL that never became ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx

log = logging.getLogger("rlrun.orchestrator")
POLL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 5.0


class StartupTimeout(RuntimeError):
    """A component did not answer /health within orchestrator.startupTimeoutSeconds."""


async def _healthy(client: httpx.AsyncClient, url: str) -> str | None:
    """None when `url`/health answers 200, else why not (for the progress message and the final error)."""
    try:
        response = await client.get(f"{url}/health", timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return None if response.status_code == 200 else f"HTTP {response.status_code}"


async def wait_until_ready(
    client: httpx.AsyncClient,
    components: Sequence[tuple[str, Sequence[str]]],
    timeout_seconds: float,
    on_wait: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """Wait for each (role, urls) in order, all within one `timeout_seconds` budget.

    `on_wait(message)` is called when the wait on a URL starts (e.g. to publish "waiting for ...")."""
    deadline = time.monotonic() + timeout_seconds
    for role, urls in components:
        for url in urls:
            why = await _healthy(client, url)
            if why is None:
                continue
            log.info("waiting for %s %s (%s)", role, url, why)
            if on_wait is not None:
                await on_wait(f"waiting for {role} {url} to become ready")
            while why is not None:
                if time.monotonic() >= deadline:
                    raise StartupTimeout(
                        f"{role} {url} was not ready within orchestrator.startupTimeoutSeconds="
                        f"{timeout_seconds:g}s (last probe of {url}/health: {why})"
                    )
                await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                why = await _healthy(client, url)
            log.info("%s %s ready", role, url)
