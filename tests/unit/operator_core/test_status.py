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
