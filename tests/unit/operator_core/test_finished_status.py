"""After Succeeded the status says the run finished: no component reads as a missing or unready one
(`OrchestratorReady 0/1`, "no inference workload exists yet") once the workloads are done or released."""

from operator_builders import T0, body, find, observed, rendered
from test_reconcile import run_pass

from rlrun.operator.observe import observe
from rlrun.operator.status import RunStatus


def test_a_succeeded_run_reports_completed_and_released_components():
    data = body()
    objs = observed(rendered(data)(0))
    orch = find(objs, "Job", "orchestrator")
    orch["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1, "ready": 0}
    first = run_pass(data, observe(objs), RunStatus(phase="Running", observed_generation=1, start_time=T0))
    assert first.status.phase == "Succeeded"
    released = {d[2] for d in first.delete}
    left = [o for o in objs if o["metadata"]["name"] not in released or o["kind"] == "Service"]
    after = run_pass(data, observe(left), first.status)
    st = after.status
    assert st.phase == "Succeeded"
    cond = st.condition("OrchestratorReady")
    assert (cond["reason"], cond["message"]) == (
        "Completed",
        "Job color-codeword-orchestrator completed (attempt 0)",
    )
    assert st.components["orchestrator"] == {"ready": 0, "desired": 0}
    for name in ("InferenceReady", "EnvWorkersReady", "TrainerReady"):
        assert st.condition(name)["reason"] == "Released", st.condition(name)
        assert st.condition(name)["message"] == "run Succeeded: workload released"
