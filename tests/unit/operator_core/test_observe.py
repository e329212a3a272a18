from operator_builders import body, find, observed, pod, rendered

from rlrun.operator.observe import observe


def test_only_failed_pods_of_the_current_job_count():
    objs = observed(rendered(body())(0))
    trainer = find(objs, "Job", "trainer")
    old = {"metadata": {"uid": "old-job-uid", "name": "color-codeword-trainer"}}
    pods = [pod(trainer, "t-0", "Failed"), pod(trainer, "t-1", "Running"), pod(old, "t-old", "Failed")]
    children = observe(objs, pods)
    assert children.failed_pods == {"trainer": ("t-0",)}
    assert children.jobs["trainer"].attempt == 0 and children.jobs["trainer"].ready == 1


def test_job_conditions_become_complete_and_failed_reason():
    objs = observed(rendered(body())(0), attempts={"orchestrator": 2})
    orch = find(objs, "Job", "orchestrator")
    orch["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
    trainer = find(objs, "Job", "trainer")
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
    trainer["status"] = {"conditions": [failed]}
    children = observe(objs, [])
    assert children.jobs["orchestrator"].complete and children.jobs["orchestrator"].attempt == 2
    assert children.jobs["trainer"].failed_reason == "BackoffLimitExceeded"
    assert children.has("PersistentVolumeClaim", "color-codeword-assets")
    assert children.deployments["inference"].ready == 1
