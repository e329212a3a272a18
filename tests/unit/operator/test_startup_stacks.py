"""The diagnosis of a stopped attempt's stacks reaches the next attempt's status entry once."""

from __future__ import annotations

from rlrun.operator.startup import note_previous_stacks

STACKS = "suspected culprit: trainer-rank1 (pid 7) (left no stack dump); stacks in /data/forensics/attempt-0/"


def test_the_diagnosis_is_noted_once_in_its_attempts_entry() -> None:
    timings = [{"attempt": 0, "scheduledSeconds": 1.0}, {"attempt": 1}]
    runtime = {"attempt": 1, "previousAttemptStacks": STACKS}
    noted, new = note_previous_stacks(timings, 1, runtime)
    assert new == STACKS and noted == [
        {"attempt": 0, "scheduledSeconds": 1.0},
        {"attempt": 1, "previousAttemptStacks": STACKS},
    ]
    assert timings[1] == {"attempt": 1}  # the input is not changed
    again, new = note_previous_stacks(noted, 1, runtime)
    assert new is None and again == noted


def test_a_report_of_another_attempt_or_without_a_diagnosis_changes_nothing() -> None:
    timings = [{"attempt": 1}]
    for attempt, runtime in (
        (1, {"attempt": 0, "previousAttemptStacks": STACKS}),  # an old report, still in status
        (1, {"attempt": 1}),
        (1, None),
        (2, {"attempt": 2, "previousAttemptStacks": STACKS}),  # no entry yet: its Job is not there
    ):
        assert note_previous_stacks(timings, attempt, runtime) == (timings, None)
