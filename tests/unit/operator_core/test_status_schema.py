"""Status the operator writes survives the API server's pruning, so its decisions survive an operator
restart: backoff deadlines, the orchestrator's own attempt, the last step time.

`pruned()` applies the API server's structural-schema pruning (unknown fields are dropped silently) with the
committed CRD's status schema; the cluster-side round trip is tests/integration/operator.
"""

from typing import Any

from operator_builders import T0, body, find, later, observed, pod, rendered
from operator_builders import settings as settings_of

from rlrun.operator.crd import crd_manifest
from rlrun.operator.observe import observe
from rlrun.operator.progress import ProgressStore, to_status
from rlrun.operator.reconcile import plan
from rlrun.operator.restarts import GroupState, StallPolicy, stall_threshold
from rlrun.operator.status import RunStatus
from rlrun.runtime.config import Progress

STATUS_SCHEMA = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
FAST = {"failurePolicy": {"maxRestarts": 3, "backoffSeconds": 5, "backoffMaxSeconds": 60}}


def pruned(value: Any, schema: dict[str, Any]) -> Any:
    """What the API server stores of `value`: fields absent from the structural schema are dropped."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return value
        if "properties" in schema:
            props = schema["properties"]
            return {k: pruned(v, props[k]) for k, v in value.items() if k in props}
        if isinstance(schema.get("additionalProperties"), dict):
            return {k: pruned(v, schema["additionalProperties"]) for k, v in value.items()}
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [pruned(v, schema["items"]) for v in value]
    return value


def restored(status: RunStatus) -> RunStatus:
    """The status a restarted operator reads back."""
    return RunStatus.from_dict(pruned(status.to_dict(), STATUS_SCHEMA))


def test_every_status_field_the_operator_writes_is_in_the_crd_schema():
    full = RunStatus(
        phase="Running",
        reason="Restarting",
        message="m",
        conditions=[{"type": "Stalled", "status": "False", "reason": "Progressing", "message": "ok"}],
        observed_generation=3,
        start_time=T0,
        trainer=GroupState(restarts=2, attempt=2, not_before=later(30)),
        orchestrator=GroupState(restarts=1, attempt=1, not_before=later(60)),
        components={"trainer": {"ready": 1, "desired": 1}},
        progress={
            "step": 4,
            "maxSteps": 9,
            "attempt": 1,
            "stepSeconds": 1.5,
            "updatedAt": "2026-01-01T00:00:00Z",
        },
    )
    written = full.to_dict()
    assert pruned(written, STATUS_SCHEMA) == written
    assert restored(full) == full


def test_operator_restarted_during_a_trainer_backoff_still_waits():
    data = body(**FAST)
    objs = observed(rendered(data)(0))
    trainer = find(objs, "Job", "trainer")
    settings = settings_of(data)
    stored = RunStatus(phase="Running", observed_generation=1, start_time=T0)
    failed = observe(objs, [pod(trainer, "color-codeword-trainer-0-x", "Failed")])
    p = plan(settings, rendered(data), failed, stored, None, T0)
    assert p.status.trainer == GroupState(1, 1, later(5))
    # The operator restarts; the old trainer Job is already gone. Within the backoff: nothing created.
    gone = observe([o for o in objs if o is not trainer])
    p2 = plan(settings, rendered(data), gone, restored(p.status), None, later(2))
    assert p2.create == [] and p2.requeue_after == 3
    p3 = plan(settings, rendered(data), gone, restored(p2.status), None, later(5))
    created = find(p3.create, "Job", "trainer")
    assert created["metadata"]["labels"]["rlrun.dev/trainer-attempt"] == "1"


def test_orchestrator_attempt_survives_a_restart_apart_from_the_trainers():
    data = body(**FAST)
    objs = observed(rendered(data)(0))
    orch = find(objs, "Job", "orchestrator")
    settings = settings_of(data)
    stored = RunStatus(phase="Running", observed_generation=1, start_time=T0)
    failed = observe(objs, [pod(orch, "color-codeword-orchestrator-x", "Failed")])
    back = restored(plan(settings, rendered(data), failed, stored, None, T0).status)
    assert back.orchestrator == GroupState(1, 1, later(5)) and back.trainer == GroupState()
    # A fresh progress store (restarted operator) refuses the straggling attempt-0 orchestrator.
    store = ProgressStore()
    store.newest(("ns", "color-codeword"), back.progress, back.orchestrator.attempt)
    late = Progress(run_id="color-codeword", attempt=0, step=3, max_steps=10)
    assert "older than the orchestrator's attempt 1" in store.offer(("ns", "color-codeword"), late)


def test_step_history_survives_so_stall_detection_keeps_its_threshold():
    data = body()
    objs = observe(observed(rendered(data)(0)))
    settings = settings_of(data)
    report = to_status(Progress(run_id="run-a", step=7, max_steps=10, step_seconds=120.0, updated_at=T0))
    stored = RunStatus(phase="Running", observed_generation=1, start_time=T0)
    back = restored(plan(settings, rendered(data), objs, stored, report, later(1)).status)
    policy = StallPolicy(factor=5, floor_seconds=60)
    assert (
        back.recent_step_seconds == (120.0,)
        and stall_threshold(policy, list(back.recent_step_seconds)) == 600
    )
    assert back.step_advanced_at == later(1) and back.progress["step"] == 7
