"""A failed pass shows on the RLRun: condition + one Event per distinct error, cleared by a good pass."""

import json

from kubernetes.client.exceptions import ApiException
from operator_builders import T0, body, later, observed, rendered
from operator_builders import settings as settings_of

from rlrun.operator.observe import observe
from rlrun.operator.reconcile import plan
from rlrun.operator.reconcile_errors import describe_error, report_error
from rlrun.operator.status import RunStatus

FORBIDDEN = (
    'jobs.batch is forbidden: User "system:serviceaccount:ns:rlrun-operator" cannot create resource '
    '"jobs" in API group "batch" in the namespace "ns"'
)


def forbidden() -> ApiException:
    """The exception the kubernetes client raises for the API server's 403 Status (same fields)."""
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps(
        {"kind": "Status", "status": "Failure", "message": FORBIDDEN, "reason": "Forbidden", "code": 403}
    )
    exc.add_note("create Job demo-orchestrator failed")
    return exc


def test_api_error_gives_the_servers_reason_and_message_led_by_the_failed_write():
    assert describe_error(forbidden()) == ("Forbidden", f"create Job demo-orchestrator failed: {FORBIDDEN}")
    plain = ApiException(status=502, reason="Bad Gateway")
    plain.body = "<html>proxy error</html>"
    assert describe_error(plain) == ("HTTP502", "Bad Gateway")
    assert describe_error(KeyError("spec")) == ("KeyError", "'spec'")


def test_first_failure_sets_the_condition_and_one_event_then_repeats_write_nothing():
    stored = RunStatus(phase="Running")
    first = report_error(stored, forbidden(), T0)
    cond = next(c for c in first.conditions if c["type"] == "ReconcileError")
    assert (cond["status"], cond["reason"]) == ("True", "Forbidden")
    assert first.event == ("Warning", "ReconcileError", f"Forbidden: {cond['message']}")
    again = report_error(RunStatus(conditions=first.conditions), forbidden(), later(10))
    assert again.conditions is None and again.event is None
    other = report_error(RunStatus(conditions=first.conditions), TimeoutError("read timed out"), later(20))
    assert other.event is not None and other.event[2] == "TimeoutError: read timed out"


def test_a_successful_pass_clears_the_condition_and_never_adds_one():
    data = body()
    settings = settings_of(data)
    children = observe(observed(rendered(data)(0)))
    steady = {"observed_generation": 1, "start_time": T0}
    failed = report_error(RunStatus(**steady), forbidden(), T0)
    p = plan(
        settings, rendered(data), children, RunStatus(conditions=failed.conditions, **steady), None, later(5)
    )
    assert not p.writes_children
    cond = p.status.condition("ReconcileError")
    assert (cond["status"], cond["reason"], cond["lastTransitionTime"]) == (
        "False",
        "Reconciled",
        "2026-01-01T00:00:05Z",
    )
    clean = plan(settings, rendered(data), children, RunStatus(), None, T0)
    assert clean.status.condition("ReconcileError") is None


def test_a_pass_that_still_writes_children_keeps_the_error_until_they_succeed():
    """The status is written before the children: clearing it there would flip the condition on every
    failing retry (and post a new Event each time). The runner clears it once every write succeeded."""
    data = body()
    failed = report_error(RunStatus(), forbidden(), T0)
    p = plan(
        settings_of(data),
        rendered(data),
        observe([]),
        RunStatus(conditions=failed.conditions),
        None,
        later(5),
    )
    assert p.writes_children
    assert p.status.condition("ReconcileError")["status"] == "True"
