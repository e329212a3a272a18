"""What counts as a change for a watcher, and what is terminal."""

from rlrun.client.events import RunEvent, changes, is_terminal
from rlrun.operator.api import RLRun, RLRunStatus


def status(**kw):
    return RLRunStatus.model_validate(kw)


def test_changes_names_phase_progress_restarts_and_conditions():
    a = status(phase="Pending", conditions=[{"type": "Ready", "status": "False", "reason": "Creating"}])
    assert changes(None, a) == ("phase", "condition/Ready")
    b = status(
        phase="Running",
        progress={"step": 3, "maxSteps": 10, "rewardMean": 0.5},
        restarts=1,
        conditions=[{"type": "Ready", "status": "True"}],
    )
    assert changes(a, b) == ("phase", "progress", "restarts", "condition/Ready")
    # component counts and generations are not watcher news
    c = b.model_copy(update={"observed_generation": 7, "components": {"trainer": {"ready": 1, "desired": 1}}})
    assert changes(b, c) == ()
    assert changes(b, status(**{**b.model_dump(by_alias=True), "reason": "Restarting"})) == ("phase",)


def test_terminal_phases_and_event_lines():
    assert is_terminal("Succeeded") and is_terminal("Failed")
    assert not any(is_terminal(p) for p in ("Pending", "Running", "Suspended", None))
    run = RLRun.model_validate(
        {"metadata": {"name": "r"}, "status": {"phase": "Succeeded", "progress": {"step": 5, "maxSteps": 5,
                                                                                  "rewardMean": 0.875}}}
    )  # fmt: skip
    event = RunEvent("MODIFIED", run, ("phase", "progress"))
    assert (
        event.terminal
        and event.describe() == "r Succeeded step 5/5 reward 0.875 restarts 0 (phase, progress)"
    )
    assert RunEvent("DELETED", run.model_copy(update={"status": None}), ("deleted",)).terminal
