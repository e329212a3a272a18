"""Crash safety and concurrent operators on the `cluster` fixture (kwok runs the pods, the test plays the
runtime): a decision is recorded before it is acted on, and whatever decides a restart is read from the
RLRun, so a crash mid-pass or a second operator neither loses nor doubles a restart or an Event."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import pytest
from kubernetes.client.exceptions import ApiException
from operator_harness import condition, create_run, events, get, pods, run_doc, run_status, running_operator

from rlrun.operator import names
from rlrun.operator.kube import Kube
from rlrun.operator.restarts import StallPolicy
from rlrun.runtime.config import Progress

pytestmark = pytest.mark.cluster

FAST = {"failurePolicy": {"maxRestarts": 2, "backoffSeconds": 2, "backoffMaxSeconds": 2}}


class FailFirstRestartRecord(Kube):
    """FAULT INJECTION, named as such: a real API server cannot be told to fail one chosen write, so this
    wrapper fails the first status write that records trainer attempt 1 with HTTP 500, as if the operator
    died at that instant. Every other call goes to the real API server; the Jobs created are recorded."""

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        self.injected = False
        self.trainer_attempts_created: list[str] = []

    def patch_run_status(self, namespace, name, status, resource_version=None):
        if not self.injected and status.get("trainerAttempt") == 1:
            self.injected = True
            raise ApiException(status=500, reason="injected fault: crash before the restart is recorded")
        return super().patch_run_status(namespace, name, status, resource_version)

    def create(self, obj):
        labels = obj["metadata"].get("labels") or {}
        if obj["kind"] == "Job" and labels.get(names.LABEL_COMPONENT) == "trainer":
            self.trainer_attempts_created.append(labels[names.LABEL_TRAINER_ATTEMPT])
        return super().create(obj)


def running_pod(kube, ns, component):
    live = [p for p in pods(kube, ns, component) if p["status"].get("phase") == "Running"]
    return live[0] if live else None


def attempt_running(kube, ns, attempt):
    p = running_pod(kube, ns, "trainer")
    return p if p and p["metadata"]["labels"].get(names.LABEL_TRAINER_ATTEMPT) == str(attempt) else None


def test_a_restart_survives_a_crash_before_it_is_recorded(crd, namespace, wait_for, set_pod_phase):
    """Before: the failed Job was deleted first, the status write then failed, and the next pass recreated
    attempt 0 at once (no backoff, no restart counted, no Event)."""
    kube, made = crd, []

    def factory(api):
        made.append(FailFirstRestartRecord(api))
        return made[0]

    with running_operator(kube, namespace, kube_factory=factory):
        create_run(kube, namespace, run_doc(**FAST))
        wait_for(lambda: run_status(kube, namespace).get("phase") == "Running", 90, "Running")
        set_pod_phase(namespace, running_pod(kube, namespace, "trainer")["metadata"]["name"], "Failed")
        wait_for(lambda: attempt_running(kube, namespace, 1), 90, "trainer attempt 1 running")
        time.sleep(2)  # a few more passes: nothing may be counted twice
        assert made[0].injected
        assert made[0].trainer_attempts_created == ["0", "1"]  # attempt 0 never re-created
        assert run_status(kube, namespace)["restarts"] == 1
        assert events(kube, namespace).count("TrainerRestart") == 1


def test_two_operators_without_peering_agree_on_restarts_events_and_stalls(
    crd, namespace, wait_for, set_pod_phase
):
    """A Deployment scaled by mistake: both operators reconcile the same run; pushes reach only one."""
    # floor 10 s: after the restart below, attempt 1 must come up and the check run within it, also on a
    # loaded machine (attempt 1 never reports progress, so a longer wait is a true stall)
    kube, stall = crd, StallPolicy(factor=2, floor_seconds=10)
    with (
        running_operator(kube, namespace, stall=stall) as pushed,
        running_operator(kube, namespace, stall=stall),
    ):
        create_run(kube, namespace, run_doc(**FAST))
        wait_for(lambda: run_status(kube, namespace).get("phase") == "Running", 90, "Running")
        token = base64.b64decode(get(kube, namespace, "secret", "demo-progress")["data"]["token"]).decode()
        url = f"http://127.0.0.1:{pushed.progress_port}/v1/namespaces/{namespace}/rlruns/demo/progress"
        for step in range(1, 31):  # 15 s of steady progress, past the stall floor, all to one replica
            body = Progress(run_id="demo", step=step, max_steps=100, step_seconds=0.5)
            resp = httpx.post(url, content=body.model_dump_json(by_alias=True), timeout=5,
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert resp.status_code == 202, resp.text
            time.sleep(0.5)
        st = run_status(kube, namespace)
        assert condition(st, "Stalled").get("status") != "True", st
        assert st.get("restarts", 0) == 0 and (st.get("progress") or {}).get("step", 0) >= 20
        set_pod_phase(namespace, running_pod(kube, namespace, "trainer")["metadata"]["name"], "Failed")
        wait_for(lambda: attempt_running(kube, namespace, 1), 90, "trainer attempt 1 running")
        time.sleep(3)
        assert run_status(kube, namespace)["restarts"] == 1
        reasons = events(kube, namespace)
        assert [reasons.count(r) for r in ("Pending", "Running", "TrainerRestart")] == [1, 1, 1], reasons
        assert "Stalled" not in reasons
