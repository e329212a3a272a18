from datetime import timedelta

from operator_builders import T0

from rlrun.operator.restarts import GroupState
from rlrun.operator.status import RunStatus


def test_transition_time_moves_only_when_the_status_flips():
    st = RunStatus()
    assert st.set_condition("Ready", False, "Starting", "a", T0)
    assert not st.set_condition("Ready", False, "Starting", "b", T0 + timedelta(seconds=5))
    cond = st.condition("Ready")
    assert cond["message"] == "b" and cond["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert st.set_condition("Ready", True, "Running", "c", T0 + timedelta(seconds=9))
    assert st.condition("Ready")["lastTransitionTime"] == "2026-01-01T00:00:09Z"


def test_round_trip_keeps_restart_bookkeeping_and_restarts_is_the_total():
    st = RunStatus(
        phase="Running",
        start_time=T0,
        trainer=GroupState(2, 2, T0 + timedelta(seconds=30)),
        orchestrator=GroupState(1, 1, None),
    )
    data = st.to_dict()
    assert data["restarts"] == 3 and data["orchestratorRestarts"] == 1 and data["trainerAttempt"] == 2
    back = RunStatus.from_dict(data)
    assert back.trainer == st.trainer and back.orchestrator == st.orchestrator and back.start_time == T0


def test_missing_status_reads_as_a_fresh_run():
    st = RunStatus.from_dict(None)
    assert st.phase == "" and st.trainer == GroupState() and st.conditions == []


def test_weights_in_sync_names_each_lagging_replica_and_survives_a_status_round_trip():
    """From the orchestrator's own report (SyncState -> Progress) through the intake to the condition."""
    from rlrun.operator.progress import to_status
    from rlrun.operator.status import take_progress, weights_in_sync
    from rlrun.runtime.config import Progress
    from rlrun.runtime.orchestrator.replicas import Replica, SyncState

    state = SyncState(
        4,
        (
            Replica("http://demo-inference-0.demo-inference.ns.svc:8000", 4),
            Replica("http://demo-inference-1.demo-inference.ns.svc:8000", 3),
            Replica("http://demo-inference-2.demo-inference.ns.svc:8000", None, "ConnectError"),
        ),
    )
    report = Progress(run_id="demo", max_steps=9, weights_version=4, inference_replicas=state.report())
    st = RunStatus()
    take_progress(st, to_status(report), T0)
    ok, reason, message = weights_in_sync(st.inference)
    assert not ok and reason == "ReplicasLagging"
    assert message == (
        "1/3 replicas serve weights version 4; demo-inference-1 serves 3, "
        "demo-inference-2 gave no version (ConnectError)"
    )
    back = RunStatus.from_dict(st.to_dict())  # what a restarted operator reads back
    assert weights_in_sync(back.inference) == (ok, reason, message)
    assert [r.get("servedVersion") for r in back.to_dict()["inference"]["replicas"]] == [4, 3, None]
    assert weights_in_sync(None) is None
