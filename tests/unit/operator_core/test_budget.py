"""Budget passes over data: GPU time integrated from the rendered trainer pods, a quiet run's status
unchanged from pass to pass (a status write is itself a pass trigger), the budget spent on time."""

import copy

from operator_builders import T0, body, find, later, observed, rendered
from operator_builders import settings as settings_of

from rlrun.operator.observe import observe
from rlrun.operator.reconcile import plan
from rlrun.operator.status import RunStatus


def _gpu_pod(job):
    """A trainer pod as the Job controller makes it from the rendered template, bound and running."""
    template = copy.deepcopy(job["spec"]["template"])
    return {
        "metadata": {**template["metadata"], "name": f"{job['metadata']['name']}-0-x",
                     "ownerReferences": [{"kind": "Job", "uid": job["metadata"]["uid"]}]},
        "spec": {**template["spec"], "nodeName": "gpu-node-0"},
        "status": {"phase": "Running"},
    }  # fmt: skip


def test_gpu_time_is_integrated_quietly_and_a_spent_budget_succeeds_the_run():
    data = body(trainer={"gpusPerNode": 2, "processesPerNode": 2}, budget={"maxGPUHours": 60 / 3600})
    settings = settings_of(data)
    objs = observed(rendered(data)(0))
    children = observe(objs, [_gpu_pod(find(objs, "Job", "trainer"))])
    assert children.gpus_in_use == 2

    first = plan(
        settings, rendered(data), children, RunStatus(observed_generation=1, start_time=T0), None, T0
    )
    assert first.status.gpu.gpus_in_use == 2 and first.requeue_after == 30  # 60 GPU-s at 2 GPUs
    second = plan(settings, rendered(data), children, first.status, None, later(10))
    assert second.status.to_dict() == first.status.to_dict()  # nothing to write while nothing changed
    assert second.status.phase == "Running"

    done = plan(settings, rendered(data), children, second.status, None, later(30))
    assert (done.status.phase, done.status.reason) == ("Succeeded", "BudgetExhausted")
    assert done.status.to_dict()["gpuHoursUsed"] == round(60 / 3600, 6)
    assert ("batch/v1", "Job", "color-codeword-trainer") in done.delete
