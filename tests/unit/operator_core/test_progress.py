"""The progress endpoint on a real loopback aiohttp server, driven with httpx (as the runtime would)."""

import asyncio

import httpx
from aiohttp import web

from rlrun.operator.progress import ProgressStore, progress_app
from rlrun.runtime.config import Progress

KEY = ("ns", "run-a")


def report(**kw):
    base = {"run_id": "run-a", "max_steps": 10, "step": 1, "attempt": 0}
    return Progress(**{**base, **kw}).model_dump_json(by_alias=True)


def test_store_orders_by_attempt_then_step_and_defers_to_a_newer_status():
    store = ProgressStore()
    assert store.offer(KEY, Progress.model_validate_json(report(step=3, stepSeconds=2.0))) is None
    assert "not newer" in store.offer(KEY, Progress.model_validate_json(report(step=2)))
    assert store.newest(KEY, None, current_attempt=0)["step"] == 3
    # another replica already wrote a newer report to status: nothing to fold in, older pushes refused
    newer = {"step": 6, "attempt": 0, "updatedAt": "2030-01-01T00:00:00Z"}
    assert store.newest(KEY, newer, current_attempt=0) is None
    assert "not newer" in store.offer(KEY, Progress.model_validate_json(report(step=5)))
    store.newest(KEY, newer, current_attempt=1)
    assert "older than the orchestrator's attempt 1" in store.offer(
        KEY, Progress.model_validate_json(report(step=9, attempt=0))
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
        return codes, poked, store.newest(KEY, None, 0)

    codes, poked, held = asyncio.run(scenario())
    assert codes == [401, 400, 400, 202, 409]
    assert poked == [KEY] and held["step"] == 5


def test_a_standby_replica_refuses_pushes_and_pokes_nothing():
    async def scenario():
        store, poked = ProgressStore(), []

        async def token_of(ns, secret):
            return b"s3cret"

        app = progress_app(store, token_of, lambda ns, name: poked.append((ns, name)), active=lambda: False)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/namespaces/ns/rlruns/run-a/progress"
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                resp = await http.post(
                    url, content=report(step=5), headers={"Authorization": "Bearer s3cret"}
                )
        finally:
            await runner.cleanup()
        return resp, poked, store.newest(KEY, None, 0)

    resp, poked, held = asyncio.run(scenario())
    assert resp.status_code == 503 and resp.headers["connection"] == "close"
    assert poked == [] and held is None


def test_the_largest_report_the_runtime_may_send_is_accepted():
    """256 inference replicas with the longest names and errors the Progress model allows."""
    from rlrun.runtime.config import ReplicaProgress

    replicas = [ReplicaProgress(name="r" * 253, in_sync=False, error="e" * 256) for _ in range(256)]
    body = Progress(run_id="run-a", max_steps=10, step=1, weights_version=3, inference_replicas=replicas)

    async def scenario():
        async def token_of(ns, secret, refresh):
            return b"s3cret"

        runner = web.AppRunner(progress_app(ProgressStore(), token_of, lambda ns, name: None))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/namespaces/ns/rlruns/run-a/progress"
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                return await http.post(
                    url,
                    content=body.model_dump_json(by_alias=True),
                    headers={"Authorization": "Bearer s3cret"},
                )
        finally:
            await runner.cleanup()

    response = asyncio.run(scenario())
    assert response.status_code == 202, response.text
