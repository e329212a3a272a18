"""plan() scenarios, one per lifecycle rule, each a pass (or a few) over data: no cluster."""

from operator_builders import T0, URL, body, find, later, observed, pod, rendered
from operator_builders import settings as settings_of

from rlrun.operator.api import RLRun, to_runtime_config
from rlrun.operator.observe import observe
from rlrun.operator.reconcile import plan
from rlrun.operator.restarts import GroupState, StallPolicy
from rlrun.operator.status import RunStatus
from rlrun.runtime.config import forensics_dir


def run_pass(data, children, stored=None, now=T0, progress=None, stall=None):
    settings = settings_of(data, stall)
    return plan(settings, rendered(data), children, stored or RunStatus(), progress, now)


def names(objs):
    return sorted((o["kind"], o["metadata"]["name"]) for o in objs)


def test_fresh_run_creates_every_child_with_attempt_and_progress_wiring():
    data = body()
    p = run_pass(data, observe([]))
    desired = rendered(data)(0)
    assert names(p.apply + p.create) == names(desired)
    assert {o["kind"] for o in p.create} == {"Job", "Secret"}
    assert p.create == [o for o in desired if o["kind"] in ("Job", "Secret")]  # exactly as rendered
    orch = find(p.create, "Job", "orchestrator")
    env = {e["name"]: e for e in orch["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RLRUN_ATTEMPT"]["value"] == "0"
    assert env["RLRUN_PROGRESS_URL"]["value"] == f"{URL}/v1/namespaces/ns/rlruns/color-codeword/progress"
    assert env["RLRUN_PROGRESS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "color-codeword-progress"
    assert orch["metadata"]["labels"]["rlrun.dev/orchestrator-attempt"] == "0"
    assert find(p.create, "Job", "trainer")["spec"]["suspend"] is False
    assert p.status.phase == "Pending" and p.status.start_time == T0
    assert [e.reason for e in p.events] == ["Pending"]
    assert p.status.condition("TrainerReady")["reason"] == "Missing"


def test_all_ready_goes_running_with_conditions_counts_and_an_event_and_writes_nothing_else():
    data = body()
    objs = observed(rendered(data)(0))
    stored = RunStatus(observed_generation=1, start_time=T0)
    p = run_pass(data, observe(objs), stored)
    assert p.status.phase == "Running" and p.status.condition("Ready")["status"] == "True"
    assert p.status.components["trainer"] == {"ready": 1, "desired": 1}
    assert [e.reason for e in p.events] == ["Running"]
    assert p.apply == [] and p.create == [] and p.delete == []


def test_hand_deleted_child_is_reapplied_and_spec_change_reapplies_all_but_jobs():
    data = body()
    objs = [o for o in observed(rendered(data)(0)) if o["kind"] != "Service"]
    p = run_pass(data, observe(objs), RunStatus(observed_generation=1))
    assert {o["kind"] for o in p.apply} == {"Service"}
    data["metadata"]["generation"] = 2
    p = run_pass(data, observe(observed(rendered(data)(0))), RunStatus(observed_generation=1))
    assert "Job" not in {o["kind"] for o in p.apply} and len(p.apply) == 9


def test_trainer_pod_failure_restarts_the_group_after_backoff_leaving_inference_alone():
    data = body(failurePolicy={"maxRestarts": 2, "backoffSeconds": 5, "backoffMaxSeconds": 60})
    objs = observed(rendered(data)(0))
    trainer = find(objs, "Job", "trainer")
    stored = RunStatus(phase="Running", observed_generation=1, start_time=T0)
    p = run_pass(data, observe(objs, [pod(trainer, "color-codeword-trainer-0-x", "Failed")]), stored)
    assert p.status.trainer == GroupState(1, 1, later(5))
    assert [e.reason for e in p.events] == ["TrainerRestart"] and p.status.phase == "Running"
    assert p.status.to_dict()["restarts"] == 1
    # next pass: the attempt-0 Job is stale -> deleted, nothing else touched
    p2 = run_pass(data, observe(objs), p.status, now=later(1))
    assert p2.delete == [("batch/v1", "Job", "color-codeword-trainer")] and p2.create == []
    # trainer gone, backoff not over -> wait; over -> create attempt 1
    gone = [o for o in objs if o is not trainer]
    p3 = run_pass(data, observe(gone), p2.status, now=later(3))
    assert p3.create == [] and p3.requeue_after == 2
    p4 = run_pass(data, observe(gone), p3.status, now=later(5))
    (job,) = p4.create
    assert job["metadata"]["labels"]["rlrun.dev/trainer-attempt"] == "1"
    assert job["spec"]["template"]["metadata"]["labels"]["rlrun.dev/trainer-attempt"] == "1"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RLRUN_ATTEMPT"] == "1"
    assert not any(
        d[1] in ("Deployment", "StatefulSet") for d in p.delete + p2.delete + p3.delete + p4.delete
    )


def test_failure_past_max_restarts_fails_the_run_and_releases_every_workload():
    data = body(failurePolicy={"maxRestarts": 1, "backoffSeconds": 1, "backoffMaxSeconds": 1})
    objs = observed(rendered(data)(1), attempts={"trainer": 1})
    trainer = find(objs, "Job", "trainer")
    stored = RunStatus(phase="Running", observed_generation=1, start_time=T0, trainer=GroupState(1, 1, T0))
    p = run_pass(data, observe(objs, [pod(trainer, "t-1", "Failed")]), stored, now=later(10))
    assert (p.status.phase, p.status.reason) == ("Failed", "TrainerRestartLimitExceeded")
    assert p.status.completion_time == later(10)
    assert sorted(d[2] for d in p.delete) == [
        "color-codeword-envs",
        "color-codeword-inference",
        "color-codeword-orchestrator",
        "color-codeword-trainer",
    ]
    assert p.apply == [] and p.create == []


def test_orchestrator_success_completes_the_run_keeping_volume_and_orchestrator_job():
    data = body()
    objs = observed(rendered(data)(0))
    find(objs, "Job", "orchestrator")["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    p = run_pass(data, observe(objs), RunStatus(phase="Running", observed_generation=1, start_time=T0))
    assert (p.status.phase, p.status.reason) == ("Succeeded", "Completed")
    assert sorted(d[2] for d in p.delete) == [
        "color-codeword-envs",
        "color-codeword-inference",
        "color-codeword-trainer",
    ]


def test_suspend_stops_jobs_and_scales_deployments_to_zero_and_resume_undoes_it():
    data = body(suspend=True)
    data["metadata"]["generation"] = 2
    objs = observed(rendered(body())(0))
    p = run_pass(data, observe(objs), RunStatus(phase="Running", observed_generation=1, start_time=T0))
    assert p.status.phase == "Suspended"
    assert sorted(p.suspend) == [("color-codeword-orchestrator", True), ("color-codeword-trainer", True)]
    assert {o["spec"]["replicas"] for o in p.apply if o["kind"] in ("Deployment", "StatefulSet")} == {0}
    for job in (o for o in objs if o["kind"] == "Job"):
        job["spec"]["suspend"] = True
    resumed = body()
    resumed["metadata"]["generation"] = 3
    p2 = run_pass(resumed, observe(objs), p.status)
    assert sorted(p2.suspend) == [("color-codeword-orchestrator", False), ("color-codeword-trainer", False)]
    assert p2.status.phase == "Pending"


def test_deadline_fails_the_run_and_ttl_deletes_it_later():
    data = body(activeDeadlineSeconds=60, ttlSecondsAfterFinished=30)
    objs = observed(rendered(data)(0))
    stored = RunStatus(phase="Running", observed_generation=1, start_time=T0)
    p = run_pass(data, observe(objs), stored, now=later(30))
    assert p.status.phase == "Running" and p.requeue_after == 30
    p = run_pass(data, observe(objs), stored, now=later(61))
    assert (p.status.phase, p.status.reason) == ("Failed", "DeadlineExceeded") and not p.delete_run
    p2 = run_pass(data, observe([]), p.status, now=later(80))
    assert not p2.delete_run and p2.requeue_after == 11
    assert run_pass(data, observe([]), p.status, now=later(91)).delete_run


def test_kueue_rule_only_the_trainer_is_queued_created_suspended_and_left_to_kueue():
    data = body(queueName="gpu-queue")
    p = run_pass(data, observe([]))
    trainer, orch = find(p.create, "Job", "trainer"), find(p.create, "Job", "orchestrator")
    assert trainer["spec"]["suspend"] is True
    assert trainer["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert orch["spec"]["suspend"] is False and "kueue.x-k8s.io/queue-name" not in orch["metadata"]["labels"]
    objs = observed(rendered(data)(0))
    assert find(objs, "Job", "trainer")["spec"]["suspend"] is True
    assert run_pass(data, observe(objs), p.status).suspend == []  # never resumed by the operator
    # the user suspends the run: the operator suspends both; resuming leaves the trainer to Kueue again
    suspended = run_pass(dict(data, spec={**data["spec"], "suspend": True}), observe(objs), p.status)
    assert suspended.suspend == [("color-codeword-orchestrator", True)]


def test_stall_sets_the_condition_emits_an_event_and_restarts_the_trainer_group():
    data = body()
    objs = observed(rendered(data)(0))
    stored = RunStatus(phase="Running", observed_generation=1, start_time=T0)
    stall = StallPolicy(factor=3, floor_seconds=2)
    report = {"step": 7, "attempt": 0, "stepSeconds": 1.0}
    p = run_pass(data, observe(objs), stored, now=T0, progress=report, stall=stall)
    assert p.status.step_advanced_at == T0 and p.status.recent_step_seconds == (1.0,)
    p = run_pass(data, observe(objs), p.status, now=later(2), progress=report, stall=stall)
    assert p.status.condition("Stalled")["status"] == "False" and p.status.trainer.restarts == 0
    p = run_pass(data, observe(objs), p.status, now=later(4), stall=stall)
    stalled = p.status.condition("Stalled")
    assert stalled["status"] == "True" and "step 7" in stalled["message"]
    assert [e.reason for e in p.events] == ["Stalled", "TrainerRestart"]
    # the Event names where the stopping pods' wrappers leave every process's stacks (runtime/podlog.py)
    run_dir = to_runtime_config(data["metadata"]["name"], RLRun.model_validate(data).spec).run_dir
    assert f"{forensics_dir(run_dir, 0)}/ on volume {data['metadata']['name']}-assets" in p.events[0].message
    assert p.status.trainer.restarts == 1 and p.status.progress == report


def test_stall_is_decided_from_status_alone_so_a_replica_without_pushes_agrees():
    """Two operators: pushes reach only one, which records each advance in status; the other reads the
    same status (no report of its own) and must not see a stall while steps keep advancing."""
    data = body()
    objs = observed(rendered(data)(0))
    stall = StallPolicy(factor=3, floor_seconds=2)
    status = RunStatus(phase="Running", observed_generation=1, start_time=T0)
    for second in range(0, 12, 1):
        pushed = run_pass(data, observe(objs), status, now=later(second), stall=stall,
                          progress={"step": second, "attempt": 0, "stepSeconds": 1.0})  # fmt: skip
        other = run_pass(data, observe(objs), pushed.status, now=later(second + 0.9), stall=stall)
        assert other.status.condition("Stalled")["status"] == "False" and other.events == []
        status = other.status
    assert status.step_advanced_at == later(11) and status.recent_step_seconds[-1] == 1.0
