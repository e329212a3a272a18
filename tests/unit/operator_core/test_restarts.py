from datetime import timedelta

from operator_builders import T0

from rlrun.operator.api import FailurePolicy
from rlrun.operator.restarts import (
    GroupState,
    StallPolicy,
    on_group_failure,
    stall_threshold,
    stalled,
)


def test_restart_delays_double_from_base_and_stop_at_cap():
    policy = FailurePolicy(max_restarts=10, backoff_seconds=5, backoff_max_seconds=30)
    state, delays = GroupState(), []
    for _ in range(5):
        state = on_group_failure(policy, state, T0, "trainer", "x").state
        delays.append((state.not_before - T0).total_seconds())
    assert delays == [5, 10, 20, 30, 30]


def test_failure_counts_a_restart_bumps_the_attempt_and_sets_the_backoff_deadline():
    policy = FailurePolicy(max_restarts=2, backoff_seconds=4, backoff_max_seconds=60)
    first = on_group_failure(policy, GroupState(), T0, "trainer", "pod x failed")
    assert first.action == "restart"
    assert first.state == GroupState(restarts=1, attempt=1, not_before=T0 + timedelta(seconds=4))
    second = on_group_failure(policy, first.state, T0, "trainer", "pod y failed")
    assert second.state.not_before == T0 + timedelta(seconds=8) and second.state.attempt == 2


def test_failure_past_max_restarts_gives_up_naming_the_field():
    policy = FailurePolicy(max_restarts=1)
    decision = on_group_failure(policy, GroupState(restarts=1, attempt=1), T0, "trainer", "pod x failed")
    assert decision.action == "give_up"
    assert decision.state == GroupState(restarts=1, attempt=1)
    assert "failurePolicy.maxRestarts is 1" in decision.message and "pod x failed" in decision.message


def test_stall_threshold_is_factor_times_median_with_a_floor():
    policy = StallPolicy(factor=3, floor_seconds=10)
    assert stall_threshold(policy, []) == 10
    assert stall_threshold(policy, [1, 2, 100]) == 10  # median 2 -> 6 < floor
    assert stall_threshold(policy, [5, 6, 7]) == 18


def test_stalled_only_after_a_step_was_seen_and_the_threshold_passed():
    policy = StallPolicy(factor=2, floor_seconds=1)
    assert not stalled(policy, [1.0], None, T0 + timedelta(hours=1))
    assert not stalled(policy, [1.0], T0, T0 + timedelta(seconds=2))
    assert stalled(policy, [1.0], T0, T0 + timedelta(seconds=2.5))
