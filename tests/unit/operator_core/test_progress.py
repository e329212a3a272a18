"""The progress endpoint on a real loopback aiohttp server, driven with httpx (as the runtime would)."""

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from aiohttp import web

from rlrun.operator.progress import ProgressStore, progress_app
from rlrun.runtime.config import Progress

KEY = ("ns", "run-a")


def report(**kw):
    base = {"run_id": "run-a", "max_steps": 10, "step": 1, "attempt": 0}
    return Progress(**{**base, **kw}).model_dump_json(by_alias=True)


def test_store_orders_by_attempt_then_step_and_tracks_step_advances():
    store, now = ProgressStore(), datetime(2026, 1, 1, tzinfo=UTC)
    assert store.offer(KEY, Progress.model_validate_json(report(step=3, stepSeconds=2.0)), now) is None
    assert "not newer" in store.offer(KEY, Progress.model_validate_json(report(step=2)), now)
    assert store.offer(KEY, Progress.model_validate_json(report(step=3)), now + timedelta(seconds=5)) is None
    view = store.view(KEY, None, current_attempt=0)
    assert view.report["step"] == 3 and view.last_advance == now and view.step_seconds == (2.0,)
    store.view(KEY, None, current_attempt=1)
    assert "older than the orchestrator's attempt 1" in store.offer(
        KEY, Progress.model_validate_json(report(step=9, attempt=0)), now
    )


def test_endpoint_checks_token_body_and_order_and_pokes_the_run():
    async def scenario():
        store, poked = ProgressStore(), []

        async def token_of(ns, secret, refresh):
            return b"s3cret" if (ns, secret) == ("ns", "run-a-progress") else None

        runner = web.AppRunner(progress_app(store, token_of, lambda ns, name: poked.append((ns, name))))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/v1/namespaces/ns/rlruns/run-a/progress"
        auth, bad = {"Authorization": "Bearer s3cret"}, {"Authorization": "Bearer nope"}
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                codes = [
                    (await http.post(url, content=report(), headers=bad)).status_code,
                    (await http.post(url, content=b"{}", headers=auth)).status_code,
                    (await http.post(url, content=report(run_id="other"), headers=auth)).status_code,
                    (await http.post(url, content=report(step=5), headers=auth)).status_code,
                    (await http.post(url, content=report(step=4), headers=auth)).status_code,
                ]
        finally:
            await runner.cleanup()
        return codes, poked, store.view(KEY, None, 0).report

    codes, poked, held = asyncio.run(scenario())
    assert codes == [401, 400, 400, 202, 409]
    assert poked == [KEY] and held["step"] == 5
