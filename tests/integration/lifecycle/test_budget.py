"""Budgets on the control-plane tier: kwok GPU nodes run the pods; GPU-hours are integrated from the pods'
GPU limits across restarts, and a spent budget ends the run Succeeded / BudgetExhausted, releasing the
workloads (the trainer's pods stop gracefully, which is when it checkpoints)."""

import pytest
from operator_harness import create_run, events, get, pods, run_doc, run_status, running_operator

pytestmark = pytest.mark.cluster

GPU_TRAINER = {"nodes": 1, "gpusPerNode": 2, "processesPerNode": 2, "microBatchSize": 64}
FAST = {"failurePolicy": {"maxRestarts": 3, "backoffSeconds": 1, "backoffMaxSeconds": 1}}


def _running(kube, ns, component, attempt):
    live = [p for p in pods(kube, ns, component) if p["status"].get("phase") == "Running"]
    return next(
        (p for p in live if p["metadata"]["labels"].get("rlrun.dev/trainer-attempt") == attempt), None
    )


def test_gpu_hours_count_every_attempt_and_a_spent_budget_succeeds_the_run(
    crd, namespace, wait_for, set_pod_phase
):
    kube = crd
    budget = 20 / 3600  # 2 GPUs: spent after ~10 s of trainer pods holding them
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc(trainer=GPU_TRAINER, budget={"maxGPUHours": budget}, **FAST))
        first = wait_for(lambda: _running(kube, namespace, "trainer", "0"), 60, "trainer attempt 0 running")
        wait_for(lambda: run_status(kube, namespace).get("gpusInUse") == 2, 30, "2 GPUs in use")
        set_pod_phase(namespace, first["metadata"]["name"], "Failed")  # a restart: its GPU time counts too
        wait_for(lambda: _running(kube, namespace, "trainer", "1"), 60, "trainer attempt 1 running")
        st = wait_for(lambda: run_status(kube, namespace).get("phase") == "Succeeded" and
                      run_status(kube, namespace), 60, "Succeeded on budget")  # fmt: skip
        assert st["reason"] == "BudgetExhausted" and "spec.budget.maxGPUHours" in st["message"], st
        assert st["restarts"] == 1
        assert budget <= st["gpuHoursUsed"] < budget + 10 * 2 / 3600, st  # at most a tick late
        assert "BudgetExhausted" in events(kube, namespace)
        for kind, name in (("job", "demo-trainer"), ("job", "demo-orchestrator")):
            wait_for(lambda k=kind, n=name: get(kube, namespace, k, n) is None, 30, f"{kind} {name} released")
        assert get(kube, namespace, "pvc", "demo-assets") is not None
        # the pods are gone: GPU time stops accumulating
        wait_for(lambda: run_status(kube, namespace).get("gpusInUse") == 0, 30, "no GPU held")


def test_a_spent_wallclock_budget_succeeds_the_run(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc(budget={"maxWallclockSeconds": 5}))
        st = wait_for(lambda: run_status(kube, namespace).get("phase") == "Succeeded" and
                      run_status(kube, namespace), 30, "Succeeded on wall clock")  # fmt: skip
        assert st["reason"] == "BudgetExhausted" and "maxWallclockSeconds=5" in st["message"], st
        assert st["gpuHoursUsed"] == 0  # a CPU run holds no GPU
