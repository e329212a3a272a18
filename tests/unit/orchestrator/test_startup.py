"""Start-up: the orchestrator waits, within orchestrator.startupTimeoutSeconds, for inference and then the
env-workers to answer /health, instead of failing (and spending a counted restart) on its first request.

The servers here are real aiohttp servers on loopback that serve only /health: what is under test is the
wait, and a late or absent listener is exactly what a pod that is still starting looks like.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
from aiohttp import web

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.orchestrator.main import serve
from rlrun.runtime.orchestrator.startup import StartupTimeout, wait_until_ready


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _health_server(port: int, probes: list[tuple[str, float]], name: str) -> web.AppRunner:
    async def health(_: web.Request) -> web.Response:
        probes.append((name, time.monotonic()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def test_waits_for_inference_first_then_env_workers() -> None:
    async def scenario() -> tuple[list[tuple[str, float]], float, list[str]]:
        inference_port, env_port = _free_port(), _free_port()
        probes: list[tuple[str, float]] = []
        messages: list[str] = []
        env = await _health_server(env_port, probes, "env")  # up from the start
        started_inference: list[float] = []

        async def start_inference_late() -> web.AppRunner:
            await asyncio.sleep(1.5)
            started_inference.append(time.monotonic())
            return await _health_server(inference_port, probes, "inference")

        late = asyncio.create_task(start_inference_late())

        async def on_wait(message: str) -> None:
            messages.append(message)

        async with httpx.AsyncClient() as client:
            await wait_until_ready(
                client,
                [
                    ("inference", [f"http://127.0.0.1:{inference_port}"]),
                    ("env-worker", [f"http://127.0.0.1:{env_port}"]),
                ],
                timeout_seconds=30,
                on_wait=on_wait,
            )
        inference = await late
        await inference.cleanup()
        await env.cleanup()
        return probes, started_inference[0], messages

    probes, inference_up, messages = asyncio.run(scenario())
    assert [name for name, _ in probes] == ["inference", "env"], (
        "env-workers probed before inference was ready"
    )
    assert probes[1][1] >= inference_up
    assert len(messages) == 1 and messages[0].startswith("waiting for inference http://127.0.0.1:")


def test_a_server_that_never_listens_fails_the_orchestrator_at_the_bound_with_its_url(tmp_path) -> None:
    """Before the bounded wait, the first /v1/version call raised httpx.ConnectError at once."""
    cfg = RuntimeConfig.model_validate(
        {
            "runId": "startup",
            "assetRoot": str(tmp_path),
            "orchestrator": {"startupTimeoutSeconds": 2, "maxSteps": 1},
        }
    )
    inference = f"http://127.0.0.1:{_free_port()}"
    env = f"http://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(StartupTimeout) as failed:
        asyncio.run(serve(cfg, [env], [inference], _free_port()))
    elapsed = time.monotonic() - t0
    assert 2.0 <= elapsed < 10, elapsed
    assert f"inference {inference} was not ready within orchestrator.startupTimeoutSeconds=2s" in str(
        failed.value
    )
    assert "ConnectError" in str(failed.value)
    progress = json.loads((cfg.run_dir / "progress.json").read_text())
    assert progress["state"] == "failed" and inference in progress["message"]
