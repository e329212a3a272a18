"""Every inference replica reloads, and rollouts go only to replicas serving the current policy.

Real peers: two CPU inference servers and an env-worker (aiohttp apps on loopback), the trainer's weight
export and reload, the orchestrator's step. The fault is a real one: replica B was started with another
run directory (a misconfigured pod), so its reload endpoint refuses the run's weights (HTTP 400) and it
keeps serving version 0, as a replica that lost a reload or came back from a restart would.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from rlrun.runtime.config import Progress, RuntimeConfig
from rlrun.runtime.envs.server import create_app as create_env_app
from rlrun.runtime.envs.server import worker_factory
from rlrun.runtime.inference.engine import Engine
from rlrun.runtime.inference.server import ServerSettings
from rlrun.runtime.inference.server import create_app as create_inference_app
from rlrun.runtime.orchestrator.loop import Orchestrator
from rlrun.runtime.orchestrator.progress import ProgressPublisher
from rlrun.runtime.orchestrator.replicas import SyncState, WeightsNotInSync, replica_name, settle_replicas
from rlrun.runtime.orchestrator.state import OrchestratorState
from rlrun.runtime.trainer.weights import export_weights, request_reload
from rlrun.runtime.upload.logger import SampleLogger

SYNC_TIMEOUT = 3.0


class Replicas:
    def __init__(self, tmp: Path, tiny_model: Path, loops: Any) -> None:
        self.cfg = RuntimeConfig.model_validate(
            {
                "runId": "sync",
                "assetRoot": str(tmp),
                "model": {"name": str(tiny_model)},
                "orchestrator": {"batchSize": 4, "groupSize": 2, "maxSteps": 3, "maxAsyncSteps": 1,
                                 "weightSyncTimeoutSeconds": SYNC_TIMEOUT},
                "envWorkers": {"environment": {"id": "color-codeword", "args": {"num_colours": 4}}},
            }
        )  # fmt: skip
        run_dir = self.cfg.run_dir
        (run_dir / "assets" / "images").mkdir(parents=True)
        self.loops = loops
        self.engines = {"a": Engine(tiny_model), "b": Engine(tiny_model)}
        self.apps = {}
        self.urls = {}
        for key, engine in self.engines.items():
            # B: another run directory, so the run's weight paths are outside it and every reload is refused
            home = run_dir if key == "a" else tmp / "elsewhere"
            settings = ServerSettings(asset_root=tmp, run_dir=home, model_name="tiny")
            self.apps[key] = create_inference_app(engine, settings)
            self.urls[key] = self.loops.serve(self.apps[key])
        self.env_url = self.loops.serve(
            create_env_app(worker_factory(self.cfg, [self.urls["a"], self.urls["b"]]))
        )

    def export(self, version: int) -> Path:
        return export_weights(self.cfg.run_dir / "weights", version, self.engines["a"].model.state_dict())

    def requests_served(self, key: str) -> int:
        return int(httpx.get(f"{self.urls[key]}/v1/stats", timeout=10).json()["requests"])


@pytest.fixture
def replicas(tmp_path: Path, tiny_model: Path, loop_thread: Any) -> Replicas:
    return Replicas(tmp_path, tiny_model, loop_thread)


async def _orchestrator(r: Replicas, urls: list[str], next_step: int) -> Orchestrator:
    publisher = ProgressPublisher(r.cfg.run_dir, Progress(run_id="sync", max_steps=3, state="starting"))
    state = OrchestratorState.fresh(0)
    state.next_step = next_step
    client = httpx.AsyncClient(timeout=60)
    logger = SampleLogger(r.cfg.sample_upload, r.cfg.run_dir, r.cfg.run_dir, r.cfg.run_id)
    return Orchestrator(r.cfg, [r.env_url], urls, client, publisher, logger, state)


def test_the_trainer_reloads_every_replica_and_a_refusing_one_does_not_fail_it(replicas: Replicas) -> None:
    path = replicas.export(1)
    failed = request_reload([replicas.urls["a"], replicas.urls["b"]], path, 1, SYNC_TIMEOUT)
    assert list(failed) == [replicas.urls["b"]] and "HTTP 400" in failed[replicas.urls["b"]]
    assert "outside the run dir" in failed[replicas.urls["b"]]
    assert replicas.engines["a"].version == 1 and replicas.engines["b"].version == 0


def test_rollouts_go_only_to_replicas_in_sync_and_status_names_the_lagging_one(replicas: Replicas) -> None:
    request_reload([replicas.urls["a"], replicas.urls["b"]], replicas.export(1), 1, SYNC_TIMEOUT)
    before_b = replicas.requests_served("b")

    async def step() -> dict:
        orch = await _orchestrator(replicas, [replicas.urls["a"], replicas.urls["b"]], next_step=1)
        try:
            return await orch.step(1)  # maxAsyncSteps=1 would accept version 0: only sync excludes B
        finally:
            await orch.client.aclose()
            await orch.publisher.aclose()
            await orch.sample_logger.aclose()

    record = asyncio.run(step())
    # B serves version 0, older than the exported 1: it got no request; every rollout is from version 1
    assert replicas.requests_served("b") == before_b and replicas.requests_served("a") > 0
    batch = replicas.cfg.run_dir / "rollouts"
    assert any(batch.iterdir())
    assert record["replicas_routed"] == 1 and record["weights_version"] == 1
    name_a, name_b = replica_name(replicas.urls["a"]), replica_name(replicas.urls["b"])
    assert record["replica_versions"] == {name_a: 1, name_b: 0}
    progress = json.loads((replicas.cfg.run_dir / "progress.json").read_text())
    assert progress["weightsVersion"] == 1
    assert progress["inferenceReplicas"] == [
        {"name": name_a, "servedVersion": 1, "inSync": True, "error": ""},
        {"name": name_b, "servedVersion": 0, "inSync": False, "error": ""},
    ]


def test_no_replica_in_sync_fails_the_step_within_the_bound_and_writes_no_batch(replicas: Replicas) -> None:
    request_reload([replicas.urls["b"]], replicas.export(1), 1, SYNC_TIMEOUT)  # refused: B stays at 0

    async def step() -> None:
        orch = await _orchestrator(replicas, [replicas.urls["b"]], next_step=2)
        try:
            # bounded here too, so that an unbounded wait fails the test instead of hanging it
            await asyncio.wait_for(orch.step(2), timeout=SYNC_TIMEOUT + 30)
        finally:
            await orch.client.aclose()
            await orch.publisher.aclose()
            await orch.sample_logger.aclose()

    t0 = time.monotonic()
    with pytest.raises(WeightsNotInSync) as err:
        asyncio.run(step())
    assert SYNC_TIMEOUT <= time.monotonic() - t0 < SYNC_TIMEOUT + 15
    message = str(err.value)
    assert "weightSyncTimeoutSeconds=3s" in message and "needs version >= 1" in message
    assert f"{replica_name(replicas.urls['b'])} serves version 0" in message
    assert not (replicas.cfg.run_dir / "rollouts").exists() or not any(
        (replicas.cfg.run_dir / "rollouts").iterdir()
    )


def test_the_env_worker_refuses_a_replica_it_was_not_configured_with(replicas: Replicas) -> None:
    body = {"example_index": 0, "group_size": 2, "inference_urls": ["http://169.254.169.254"]}
    response = httpx.post(f"{replicas.env_url}/v1/rollouts", json=body, timeout=30)
    assert response.status_code == 400 and "not among this env-worker's replicas" in response.text
    assert "169.254.169.254" in response.text


def test_the_runs_end_waits_for_every_replica_to_serve_the_final_weights_within_the_bound(
    replicas: Replicas,
) -> None:
    """After the last step the trainer's final reload may still be under way on some replica: the final
    status waits for it (A reloads a second late), and a replica that never loads them (B refuses) is
    reported out of sync after weightSyncTimeoutSeconds, the run's result untouched (no raise)."""
    path = replicas.export(1)
    urls = [replicas.urls["a"], replicas.urls["b"]]
    seen: list[SyncState] = []

    async def record(state: SyncState) -> None:
        seen.append(state)

    async def settle(on: list[str]) -> tuple[SyncState, float]:
        async with httpx.AsyncClient(timeout=10) as client:
            t0 = time.monotonic()
            state = await settle_replicas(client, on, replicas.cfg.run_dir, 1, SYNC_TIMEOUT, record)
            return state, time.monotonic() - t0

    late = threading.Timer(1.0, request_reload, ([replicas.urls["a"]], path, 1, SYNC_TIMEOUT))
    late.start()
    state, waited = asyncio.run(settle([replicas.urls["a"]]))
    late.join()
    assert 1.0 <= waited < SYNC_TIMEOUT and [r.served_version for r in state.replicas] == [1]
    assert seen[0].replicas[0].served_version == 0  # it did start behind

    state, waited = asyncio.run(settle(urls))
    assert SYNC_TIMEOUT <= waited < SYNC_TIMEOUT + 10
    assert [(r.name, r.in_sync) for r in state.report()] == [
        (replica_name(replicas.urls["a"]), True),
        (replica_name(replicas.urls["b"]), False),
    ]


def test_a_trainer_stopping_on_sigterm_asks_no_replica_to_reload(replicas: Replicas) -> None:
    """Once SIGTERM is in, the grace window is the checkpoint's: inference is stopping too, and the resumed
    trainer publishes its weights again first thing."""
    urls = [replicas.urls["a"], replicas.urls["b"]]
    failed = request_reload(urls, replicas.export(1), 1, SYNC_TIMEOUT, should_stop=lambda: True)
    assert failed == {url: "not asked: stopping on SIGTERM" for url in urls}
    assert replicas.engines["a"].version == 0  # A would have loaded them (the first test)
