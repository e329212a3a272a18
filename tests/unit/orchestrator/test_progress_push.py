"""A progress push that reaches a standby operator replica (503) is retried, so with replicaCount > 1 the
active replica still gets it; a push every replica refuses gives up within a bound."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from rlrun.operator.progress import ProgressStore, progress_app
from rlrun.runtime.config import Progress
from rlrun.runtime.orchestrator import progress as publisher_module
from rlrun.runtime.orchestrator.progress import ProgressPublisher

NS, RUN, TOKEN = "ns", "demo", "secret-token"


def _push(monkeypatch, tmp: Path, standby_answers: int) -> tuple[dict | None, int, float]:
    """The operator's real endpoint; its first `standby_answers` requests see a standby (as when the
    Service routes to the replica that is not active)."""
    calls = 0

    def active() -> bool:
        nonlocal calls
        calls += 1
        return calls > standby_answers

    async def scenario() -> tuple[dict | None, float]:
        store = ProgressStore()
        store.newest((NS, RUN), None, 0)

        async def token_of(ns: str, secret: str, refresh: bool) -> bytes | None:
            return TOKEN.encode() if (ns, secret) == (NS, f"{RUN}-progress") else None

        runner = web.AppRunner(progress_app(store, token_of, lambda ns, name: None, active))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        monkeypatch.setenv(
            "RLRUN_PROGRESS_URL", f"http://127.0.0.1:{port}/v1/namespaces/{NS}/rlruns/{RUN}/progress"
        )
        monkeypatch.setenv("RLRUN_PROGRESS_TOKEN", TOKEN)
        publisher = ProgressPublisher(tmp, Progress(run_id=RUN, attempt=0, max_steps=5))
        started = time.monotonic()
        try:
            await publisher.publish(Progress(run_id=RUN, attempt=0, step=3, max_steps=5))
        finally:
            await publisher.aclose()
            await runner.cleanup()
        return store.newest((NS, RUN), None, 0), time.monotonic() - started

    report, seconds = asyncio.run(scenario())
    return report, calls, seconds


def test_a_push_answered_by_a_standby_is_retried_until_the_active_replica_takes_it(monkeypatch, tmp_path):
    report, calls, _ = _push(monkeypatch, tmp_path, standby_answers=2)
    assert calls == 3
    assert report is not None and report["step"] == 3


def test_a_push_every_replica_refuses_gives_up_within_the_bound(monkeypatch, tmp_path):
    report, calls, seconds = _push(monkeypatch, tmp_path, standby_answers=100)
    assert calls == publisher_module.PUSH_ATTEMPTS
    assert report is None
    bound = sum(publisher_module.PUSH_RETRY_SECONDS * a for a in range(publisher_module.PUSH_ATTEMPTS))
    assert seconds < bound + 5
