"""Run lifecycle on the `cluster` fixture: kwok runs the pods, the test plays the runtime (fails a pod,
completes the orchestrator, pushes progress)."""

import base64
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest
from operator_harness import condition, create_run, events, get, pods, run_doc, run_status, running_operator
from prometheus_client import REGISTRY

from rlrun.operator.restarts import StallPolicy
from rlrun.runtime import stackdump
from rlrun.runtime.config import Progress, TrainerStartup

pytestmark = pytest.mark.cluster

FAST = {"failurePolicy": {"maxRestarts": 1, "backoffSeconds": 2, "backoffMaxSeconds": 2}}


def phase(kube, ns):
    return run_status(kube, ns).get("phase")


def running_pod(kube, ns, component):
    live = [p for p in pods(kube, ns, component) if p["status"].get("phase") == "Running"]
    return live[0] if live else None


def test_trainer_failure_restarts_the_group_then_fails_past_max_restarts(
    crd, namespace, wait_for, set_pod_phase
):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc(**FAST))
        wait_for(lambda: phase(kube, namespace) == "Running", 60, "Running")
        inference = {p["metadata"]["uid"] for p in pods(kube, namespace, "inference")}
        first = running_pod(kube, namespace, "trainer")
        set_pod_phase(namespace, first["metadata"]["name"], "Failed")
        wait_for(lambda: run_status(kube, namespace).get("restarts") == 1, 30, "restarts=1")
        restarts = {"namespace": namespace, "run": "demo"}  # the dashboard's mirror of status
        wait_for(lambda: REGISTRY.get_sample_value("rlrun_run_restarts", {**restarts, "component": "trainer"}) == 1,
                 10, "rlrun_run_restarts{component=trainer} 1")  # fmt: skip
        assert REGISTRY.get_sample_value("rlrun_run_restarts", {**restarts, "component": "orchestrator"}) == 0

        def new_attempt():
            p = running_pod(kube, namespace, "trainer")
            return p if p and p["metadata"]["labels"].get("rlrun.dev/trainer-attempt") == "1" else None

        second = wait_for(new_attempt, 60, "trainer attempt 1 running")
        env = {e["name"]: e.get("value") for e in second["spec"]["containers"][0]["env"]}
        assert env["RLRUN_ATTEMPT"] == "1"
        assert {p["metadata"]["uid"] for p in pods(kube, namespace, "inference")} == inference
        assert "TrainerRestart" in events(kube, namespace)
        set_pod_phase(namespace, second["metadata"]["name"], "Failed")
        wait_for(lambda: phase(kube, namespace) == "Failed", 30, "Failed past maxRestarts")
        assert run_status(kube, namespace)["reason"] == "TrainerRestartLimitExceeded"
        for kind, name in (
            ("job", "demo-trainer"),
            ("statefulset", "demo-inference"),
            ("deployment", "demo-envs"),
        ):
            wait_for(lambda k=kind, n=name: get(kube, namespace, k, n) is None, 30, f"{kind} {name} released")
        assert get(kube, namespace, "pvc", "demo-assets") is not None


def test_orchestrator_success_completes_and_ttl_deletes_the_run(crd, namespace, wait_for, set_pod_phase):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc(ttlSecondsAfterFinished=3))
        wait_for(lambda: phase(kube, namespace) == "Running", 60, "Running")
        orch = running_pod(kube, namespace, "orchestrator")
        set_pod_phase(namespace, orch["metadata"]["name"], "Succeeded")
        wait_for(lambda: phase(kube, namespace) == "Succeeded", 30, "Succeeded")
        st = run_status(kube, namespace)
        assert st["completionTime"] and st["reason"] == "Completed"
        wait_for(
            lambda: get(kube, namespace, "statefulset", "demo-inference") is None, 30, "inference released"
        )
        assert get(kube, namespace, "pvc", "demo-assets") is not None
        wait_for(lambda: get(kube, namespace, "rlrun", "demo") is None, 30, "TTL deletes the run")


def test_suspend_and_resume(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc())
        wait_for(lambda: phase(kube, namespace) == "Running", 60, "Running")
        kube.kubectl(
            "patch", "rlr", "demo", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
        )
        wait_for(lambda: phase(kube, namespace) == "Suspended", 30, "Suspended")
        wait_for(
            lambda: get(kube, namespace, "job", "demo-trainer")["spec"]["suspend"], 30, "trainer suspended"
        )
        wait_for(
            lambda: get(kube, namespace, "statefulset", "demo-inference")["spec"]["replicas"] == 0,
            30,
            "scaled 0",
        )
        wait_for(lambda: not running_pod(kube, namespace, "trainer"), 30, "trainer pods gone")
        kube.kubectl(
            "patch", "rlr", "demo", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
        )
        wait_for(lambda: phase(kube, namespace) == "Running", 60, "Running again")
        assert get(kube, namespace, "pvc", "demo-assets") is not None


def test_deadline_fails_the_run(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc(activeDeadlineSeconds=4))
        wait_for(lambda: phase(kube, namespace) == "Failed", 30, "Failed by deadline")
        assert run_status(kube, namespace)["reason"] == "DeadlineExceeded"
        wait_for(lambda: get(kube, namespace, "job", "demo-trainer") is None, 30, "trainer released")


def test_kueue_trainer_is_created_suspended_and_unsuspending_proceeds(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc(queueName="gpu-queue"))
        job = wait_for(lambda: get(kube, namespace, "job", "demo-trainer"), 30, "trainer Job")
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        orchestrator = get(kube, namespace, "job", "demo-orchestrator")
        assert (
            "kueue.x-k8s.io/queue-name" not in orchestrator["metadata"]["labels"]
        )  # only the trainer queues
        wait_for(lambda: running_pod(kube, namespace, "orchestrator"), 60, "orchestrator runs unqueued")
        # The status lags the cluster by up to one pass (the first pass wrote TrainerReady=Missing before
        # the Job it created was observed): wait for the pass that sees the suspended Job.
        wait_for(
            lambda: condition(run_status(kube, namespace), "TrainerReady").get("reason") == "Suspended",
            30,
            "TrainerReady reason Suspended",
        )
        assert phase(kube, namespace) == "Pending", "Pending while the trainer is queued"
        assert get(kube, namespace, "job", "demo-trainer")["spec"]["suspend"] is True  # never resumed by us
        assert not pods(kube, namespace, "trainer")
        # play Kueue: admit the gang
        kube.kubectl(
            "patch",
            "job",
            "demo-trainer",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"suspend":false}}',
        )
        wait_for(lambda: phase(kube, namespace) == "Running", 60, "Running once admitted")
        assert get(kube, namespace, "job", "demo-trainer")["spec"]["suspend"] is False


def test_progress_push_fills_status_and_columns_and_stall_restarts(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace, stall=StallPolicy(factor=2, floor_seconds=3)) as op:
        create_run(kube, namespace, run_doc(**FAST))
        wait_for(lambda: phase(kube, namespace) == "Running", 60, "Running")
        secret = get(kube, namespace, "secret", "demo-progress")
        token = base64.b64decode(secret["data"]["token"]).decode()
        url = f"http://127.0.0.1:{op.progress_port}/v1/namespaces/{namespace}/rlruns/demo/progress"

        def push(step, **kw):
            body = Progress(run_id="demo", step=step, max_steps=60, step_seconds=0.5, reward_mean=0.25, **kw)
            return httpx.post(url, content=body.model_dump_json(by_alias=True), timeout=5,
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip

        assert push(3).status_code == 202
        wait_for(lambda: (run_status(kube, namespace).get("progress") or {}).get("step") == 3, 20, "progress")
        old = Progress(run_id="demo", step=2, max_steps=60, updated_at=datetime(2020, 1, 1, tzinfo=UTC))
        stale = httpx.post(url, content=old.model_dump_json(by_alias=True), timeout=5,
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert stale.status_code == 409
        table = kube.kubectl("get", "rlr", "demo", "-n", namespace).stdout.split("\n")[1].split()
        assert table[1:4] == ["Running", "3", "0.25"], table
        # no further step: after max(3s floor, 2 x 0.5s) the run is Stalled and the trainer group restarts
        wait_for(
            lambda: condition(run_status(kube, namespace), "Stalled").get("status") == "True", 20, "Stalled"
        )
        wait_for(lambda: run_status(kube, namespace).get("restarts") == 1, 20, "stall restart counted")
        assert "Stalled" in events(kube, namespace)
        # the Event says where the stopping trainer pods' wrappers left every process's stacks
        # (a second stall of the restarted attempt may already have its own Event by now)
        stalled = [e["message"] for e in get(kube, namespace, "events")["items"] if e["reason"] == "Stalled"]
        assert any(
            "dump every process's stacks to /data/outputs/run_demo/forensics/attempt-0/ on volume demo-assets"
            in message
            for message in stalled
        ), stalled


DUMPER = """
import sys
from pathlib import Path
from rlrun.runtime import stackdump
stackdump.install(Path(sys.argv[1]), 0, sys.argv[2])
if sys.argv[3] == "dump":
    stackdump.dump_now("SIGTERM")  # what each rank does when its pod's log wrapper is stopped
"""


def test_the_attempt_after_a_stall_names_the_suspect_in_an_event(crd, namespace, wait_for, tmp_path):
    """Stall -> group restart; the stopped attempt's ranks left their stacks (rank 2 none: it was not
    running); the next attempt's trainer diagnoses them (the runtime's own code) and the orchestrator's
    report relays that; the operator says it once, as a Warning Event, and keeps it in status."""
    kube = crd
    with running_operator(kube, namespace, stall=StallPolicy(factor=2, floor_seconds=3)) as op:
        create_run(kube, namespace, run_doc(**FAST))
        wait_for(lambda: phase(kube, namespace) == "Running", 60, "Running")
        token = base64.b64decode(get(kube, namespace, "secret", "demo-progress")["data"]["token"]).decode()
        url = f"http://127.0.0.1:{op.progress_port}/v1/namespaces/{namespace}/rlruns/demo/progress"

        def push(step, **kw):
            body = Progress(
                run_id="demo", step=step, max_steps=60, step_seconds=0.5, updated_at=datetime.now(UTC), **kw
            )
            response = httpx.post(url, content=body.model_dump_json(by_alias=True), timeout=5,
                                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            assert response.status_code == 202, response.text

        push(3)
        wait_for(lambda: run_status(kube, namespace).get("restarts") == 1, 30, "the stall restart")
        assert run_status(kube, namespace)["trainerStalledAttempt"] == 0
        for rank, what in ((0, "dump"), (1, "dump"), (2, "silent")):
            subprocess.run(
                [sys.executable, "-c", DUMPER, str(tmp_path), f"trainer-rank{rank}", what], check=True
            )
        stacks = stackdump.diagnose_stopped_attempt(tmp_path, 0)  # attempt 1's trainer at its start
        assert stacks and "suspected culprit: trainer-rank2" in stacks
        startup = TrainerStartup(attempt=1, previous_attempt_stacks=stacks)
        step = 4
        while "StallDiagnosed" not in events(kube, namespace):  # a progressing attempt 1: no second stall
            push(step, trainer_startup=startup)
            step += 1
            assert step < 60, "no StallDiagnosed Event"
            time.sleep(1)
        diagnosed = [
            e["message"] for e in get(kube, namespace, "events")["items"] if e["reason"] == "StallDiagnosed"
        ]
        assert diagnosed == [f"trainer attempt 0 stalled; {stacks}"]
        [entry] = [e for e in run_status(kube, namespace)["startup"] if e["attempt"] == 1]
        assert entry["previousAttemptStacks"] == stacks
        push(step, trainer_startup=startup)
        time.sleep(2)
        assert events(kube, namespace).count("StallDiagnosed") == 1  # once, however many reports repeat it
