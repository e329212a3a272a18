"""The operator against a real control plane (apiserver + controller-manager + scheduler + kwok pods)."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from operator_harness import condition, create_run, events, get, run_doc, run_status, running_operator

from rlrun.operator.restarts import GroupState
from rlrun.operator.status import RunStatus

pytestmark = pytest.mark.cluster
T0 = datetime(2026, 1, 1, tzinfo=UTC)

CHILDREN = [
    ("persistentvolumeclaim", "demo-assets"),
    ("configmap", "demo-config"),
    ("secret", "demo-progress"),
    ("service", "demo-inference"),
    ("statefulset", "demo-inference"),
    ("service", "demo-envs"),
    ("deployment", "demo-envs"),
    ("service", "demo-orchestrator"),
    ("job", "demo-orchestrator"),
    ("service", "demo-trainer"),
    ("job", "demo-trainer"),
    ("networkpolicy", "demo-net"),
]


def test_create_builds_every_child_and_goes_pending_to_running(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc())
        wait_for(lambda: all(get(kube, namespace, k, n) for k, n in CHILDREN), 30, "every child exists")
        for kind, name in CHILDREN:
            owners = get(kube, namespace, kind, name)["metadata"]["ownerReferences"]
            assert [o["kind"] for o in owners] == ["RLRun"], (kind, name)
        trainer = get(kube, namespace, "job", "demo-trainer")
        assert trainer["metadata"]["labels"]["rlrun.dev/trainer-attempt"] == "0"
        wait_for(lambda: run_status(kube, namespace).get("phase") == "Running", 60, "phase Running")
        st = run_status(kube, namespace)
        for cond in ("Ready", "InferenceReady", "EnvWorkersReady", "OrchestratorReady", "TrainerReady"):
            assert condition(st, cond)["status"] == "True", cond
        assert st["components"]["trainer"] == {"ready": 1, "desired": 1}
        assert st["observedGeneration"] == 1 and st["startTime"]
        assert "Pending" in events(kube, namespace) and "Running" in events(kube, namespace)
        table = kube.kubectl("get", "rlr", "-n", namespace).stdout
        assert table.split()[:6] == ["NAME", "PHASE", "STEP", "REWARD", "RESTARTS", "AGE"], table
        assert "Running" in table


def test_spec_update_hand_deleted_child_and_gc(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc())
        wait_for(lambda: get(kube, namespace, "deployment", "demo-envs"), 30, "env-workers Deployment")
        kube.kubectl(
            "patch",
            "rlr",
            "demo",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"envWorkers":{"replicas":3}}}',
        )
        wait_for(
            lambda: get(kube, namespace, "deployment", "demo-envs")["spec"]["replicas"] == 3, 30, "scaled"
        )
        kube.kubectl("delete", "service", "demo-inference", "-n", namespace)
        kube.kubectl("delete", "job", "demo-orchestrator", "-n", namespace)
        wait_for(lambda: get(kube, namespace, "service", "demo-inference"), 30, "Service recreated")
        wait_for(lambda: get(kube, namespace, "job", "demo-orchestrator"), 30, "Job recreated")
    kube.kubectl("delete", "rlr", "demo", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(
        lambda: not any(get(kube, namespace, k, n) for k, n in CHILDREN if k != "persistentvolumeclaim"),
        60,
        "garbage collection of every child",
    )


def test_operator_restarted_mid_reconcile_converges_without_duplicates(crd, namespace, wait_for):
    kube = crd
    create_run(kube, namespace, run_doc())
    with running_operator(kube, namespace):
        wait_for(lambda: get(kube, namespace, "configmap", "demo-config"), 30, "first children")
    with running_operator(kube, namespace):
        wait_for(lambda: run_status(kube, namespace).get("phase") == "Running", 60, "Running after restart")
    jobs = get(kube, namespace, "jobs")["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == ["demo-orchestrator", "demo-trainer"]
    deployments = get(kube, namespace, "deployments")["items"]
    assert [d["metadata"]["name"] for d in deployments] == ["demo-envs"]
    assert len(get(kube, namespace, "statefulsets")["items"]) == 1
    assert len(get(kube, namespace, "pods", "-l", "app.kubernetes.io/component=trainer")["items"]) == 1


def test_every_status_field_the_operator_writes_survives_the_api_servers_pruning(crd, namespace):
    """Backoff deadlines, the orchestrator's own attempt and the last step time live only in status: a
    field the CRD schema lacks is silently dropped by the API server, and a restarted operator would then
    skip a backoff or lose the stall threshold."""
    kube = crd
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(run_doc()))
    full = RunStatus(
        phase="Running",
        reason="Restarting",
        message="trainer failed; restart 2/3",
        conditions=[
            {"type": t, "status": v, "reason": r, "message": r, "lastTransitionTime": "2026-01-01T00:00:00Z"}
            for t, v, r in (("Stalled", "True", "NoStepAdvance"), ("ReconcileError", "False", "Reconciled"))
        ],
        observed_generation=1,
        start_time=T0,
        trainer=GroupState(restarts=2, attempt=2, not_before=T0 + timedelta(seconds=30)),
        orchestrator=GroupState(restarts=1, attempt=1, not_before=T0 + timedelta(seconds=60)),
        components={"trainer": {"ready": 1, "desired": 1}},
        progress={
            "step": 4,
            "maxSteps": 9,
            "attempt": 1,
            "stepSeconds": 1.5,
            "updatedAt": "2026-01-01T00:00:00Z",
        },
    )
    patch = json.dumps({"status": full.to_dict()})
    kube.kubectl("patch", "rlr", "demo", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch)
    stored = run_status(kube, namespace)
    assert {k for k, v in full.to_dict().items() if v is not None} <= set(stored), stored
    assert RunStatus.from_dict(stored) == full
