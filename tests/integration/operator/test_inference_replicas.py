"""Inference replicas on a real control plane: a StatefulSet under a headless Service, each pod with its
own DNS name in every role's env, and a `WeightsInSync` condition fed by the orchestrator's own probe.

kwok runs no containers, so the replicas the orchestrator probes are two real CPU inference servers on
loopback; the report reaches the operator through the real producer (`Orchestrator.wait_for_version`
-> `ProgressPublisher` push) with the run's token. Replica B plays a replica restarted after the last
reload: it serves the base model (version 0) until it is reloaded.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from operator_harness import condition, create_run, get, pods, run_doc, run_status, running_operator

from rlrun.operator import names
from rlrun.runtime.config import Progress, RuntimeConfig
from rlrun.runtime.inference.engine import Engine
from rlrun.runtime.inference.server import ServerSettings, create_app
from rlrun.runtime.models.tiny import build_tiny_vlm
from rlrun.runtime.orchestrator.loop import Orchestrator
from rlrun.runtime.orchestrator.progress import PROGRESS_TOKEN_ENV, PROGRESS_URL_ENV, ProgressPublisher
from rlrun.runtime.orchestrator.replicas import replica_name
from rlrun.runtime.orchestrator.state import OrchestratorState
from rlrun.runtime.trainer.weights import export_weights, request_reload

pytestmark = pytest.mark.cluster


def _spec_doc() -> dict[str, Any]:
    doc = run_doc()
    doc["spec"]["inference"] = {**doc["spec"].get("inference", {}), "replicas": 2}
    return doc


def test_replicas_are_a_statefulset_with_per_pod_names_in_every_role(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, _spec_doc())
        wait_for(lambda: get(kube, namespace, "statefulset", "demo-inference"), 30, "inference StatefulSet")
        sts = get(kube, namespace, "statefulset", "demo-inference")
        svc = get(kube, namespace, "service", "demo-inference")
        assert sts["spec"]["serviceName"] == "demo-inference" and svc["spec"]["clusterIP"] == "None"
        assert get(kube, namespace, "deployment", "demo-inference") is None
        # the StatefulSet controller names the pods the URLs point at; kwok makes them Ready
        wait_for(
            lambda: (
                sorted(p["metadata"]["name"] for p in pods(kube, namespace, "inference"))
                == ["demo-inference-0", "demo-inference-1"]
            ),
            60,
            "pods demo-inference-0 and -1",
        )
        wait_for(
            lambda: (
                run_status(kube, namespace).get("components", {}).get("inference")
                == {"ready": 2, "desired": 2}
            ),
            60,
            "2/2 inference replicas ready in status",
        )
        assert condition(run_status(kube, namespace), "InferenceReady")["status"] == "True"
        job = get(kube, namespace, "job", "demo-orchestrator")
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["RLRUN_INFERENCE_URLS"].split(",") == [
            f"http://demo-inference-{i}.demo-inference.{namespace}.svc:{names.INFERENCE_PORT}" for i in (0, 1)
        ]


async def _serve(engine: Engine, run_dir: Path, tmp: Path) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(
        create_app(engine, ServerSettings(asset_root=tmp, run_dir=run_dir, model_name="t"))
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def test_a_lagging_replica_turns_weights_in_sync_false_in_status(
    crd, namespace, wait_for, tmp_path, monkeypatch
):
    kube = crd
    model = build_tiny_vlm(tmp_path / "model")
    cfg = RuntimeConfig.model_validate(
        {"runId": "demo", "assetRoot": str(tmp_path), "model": {"name": str(model)},
         "orchestrator": {"weightSyncTimeoutSeconds": 30}}
    )  # fmt: skip
    with running_operator(kube, namespace) as op:
        create_run(kube, namespace, _spec_doc())
        wait_for(lambda: get(kube, namespace, "secret", "demo-progress"), 30, "progress Secret")
        token = base64.b64decode(get(kube, namespace, "secret", "demo-progress")["data"]["token"]).decode()
        monkeypatch.setenv(PROGRESS_TOKEN_ENV, token)
        monkeypatch.setenv(
            PROGRESS_URL_ENV,
            f"http://127.0.0.1:{op.progress_port}{names.PROGRESS_PATH.format(namespace=namespace, name='demo')}",
        )

        async def play() -> tuple[str, str]:
            engines = [Engine(model), Engine(model)]
            served = [await _serve(e, cfg.run_dir, tmp_path) for e in engines]
            urls = [url for _, url in served]
            publisher = ProgressPublisher(cfg.run_dir, Progress(run_id="demo", max_steps=3, state="starting"))
            client = httpx.AsyncClient(timeout=30)
            orch = Orchestrator(
                cfg, ["http://127.0.0.1:9"], urls, client, publisher, None, OrchestratorState.fresh(0)
            )
            try:
                path = export_weights(cfg.run_dir / "weights", 1, engines[0].model.state_dict())
                # replica B "restarted" after this reload: only A serves version 1
                assert await asyncio.to_thread(request_reload, urls[:1], path, 1, 30.0) == {}
                _, routed = await orch.wait_for_version(0)
                assert routed == urls[:1]
                await asyncio.to_thread(
                    wait_for,
                    lambda: condition(run_status(kube, namespace), "WeightsInSync").get("status") == "False",
                    30,
                    "WeightsInSync False",
                )
                described = await asyncio.to_thread(kube.kubectl, "describe", "rlr", "demo", "-n", namespace)
                # B catches up (the trainer's next reload): every replica in sync again
                assert await asyncio.to_thread(request_reload, urls, path, 1, 30.0) == {}
                _, routed = await orch.wait_for_version(0)
                assert routed == urls
                return described.stdout, replica_name(urls[1])
            finally:
                await client.aclose()
                await publisher.aclose()
                for runner, _ in served:
                    await runner.cleanup()

        described, lagging = asyncio.run(play())
        assert "WeightsInSync" in described and f"{lagging} serves 0" in described, described
        wait_for(
            lambda: condition(run_status(kube, namespace), "WeightsInSync").get("status") == "True",
            30,
            "WeightsInSync True once both serve version 1",
        )
        inference = run_status(kube, namespace)["inference"]
        assert inference["weightsVersion"] == 1
        assert [(r["servedVersion"], r["inSync"]) for r in inference["replicas"]] == [(1, True), (1, True)]


def _statefulset(name: str) -> dict[str, Any]:
    labels = {"app": name[:63]}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "serviceName": "any",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }


def test_the_run_name_bound_is_the_statefulset_controllers(crd, namespace, wait_for):
    """Why run names stop at names.MAX_RUN_NAME_LENGTH: the real StatefulSet controller labels each pod with
    `controller-revision-hash: <name>-<hash>`, so a StatefulSet named longer than 52 characters never gets
    a pod, while the inference StatefulSet of the longest allowed run name does."""
    kube = crd
    longest = "r" * names.MAX_RUN_NAME_LENGTH + names.SUFFIX_INFERENCE
    too_long = "x" * (names.STATEFULSET_NAME_MAX + 1)
    assert len(longest) == names.STATEFULSET_NAME_MAX
    for name in (longest, too_long):
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_statefulset(name)))
    wait_for(lambda: get(kube, namespace, "pod", f"{longest}-0"), 60, "the 52-character StatefulSet's pod")
    wait_for(
        lambda: any(
            e["reason"] == "FailedCreate"
            and e["involvedObject"]["name"] == too_long
            and "metadata.labels" in e["message"]
            and "must be no more than 63" in e["message"]
            for e in get(kube, namespace, "events")["items"]
        ),
        60,
        "FailedCreate for the 53-character StatefulSet",
    )
    assert get(kube, namespace, "pod", f"{too_long}-0") is None
