"""A failed reconcile pass, made visible on the RLRun itself. Pure.

Users look at `kubectl describe rlrun`, not at the operator's log. When a pass fails (RBAC Forbidden, an
admission webhook refusing a child, a quota) the operator sets the condition `ReconcileError=True` with
the API server's reason and message and posts one Warning Event; the retry loop repeats neither while the
error stays the same. The next successful pass flips the condition back to False (`plan()` does that).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from rlrun.operator.status import RunStatus

CONDITION = "ReconcileError"
EVENT_REASON = "ReconcileError"
MAX_MESSAGE = 4000
_REASON_CHARS = re.compile(r"[^A-Za-z0-9]")


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(CamelCase reason, message) of a failed pass. An API error gives the server's own reason and
    message (e.g. Forbidden + 'jobs.batch is forbidden: User ... cannot create ...'); notes added with
    `add_note` (which write failed) lead the message."""
    if isinstance(exc, ApiException):
        status: dict[str, Any] = {}
        with contextlib.suppress(TypeError, ValueError):  # a non-JSON body: fall back to the HTTP status
            status = json.loads(exc.body) if exc.body else {}
        reason = str(status.get("reason") or f"HTTP{exc.status}")
        message = str(status.get("message") or exc.reason or f"HTTP {exc.status}")
    else:
        reason, message = type(exc).__name__, str(exc) or type(exc).__name__
    reason = _REASON_CHARS.sub("", reason) or "Error"
    notes = getattr(exc, "__notes__", None) or []
    if notes:
        message = f"{'; '.join(notes)}: {message}"
    return reason, message[:MAX_MESSAGE]


@dataclass(frozen=True)
class ErrorReport:
    conditions: list[dict[str, Any]] | None
    """The whole new conditions list to write (a merge patch replaces lists), or None: nothing changed."""
    event: tuple[str, str, str] | None
    """(type, reason, message) of the Event to post after the status write, or None: already announced."""


def report_error(stored: RunStatus, exc: BaseException, now: datetime) -> ErrorReport:
    """What to write for a pass that failed with `exc`, given the status the pass read."""
    reason, message = describe_error(exc)
    st = replace(stored, conditions=[dict(c) for c in stored.conditions])
    before = st.condition(CONDITION)
    unchanged = (
        before is not None
        and before.get("status") == "True"
        and (before.get("reason"), before.get("message")) == (reason, message)
    )
    if unchanged:
        return ErrorReport(None, None)
    st.set_condition(CONDITION, True, reason, message, now)
    return ErrorReport(st.conditions, ("Warning", EVENT_REASON, f"{reason}: {message}"))


def clear_error(st: RunStatus, now: datetime) -> None:
    """After a pass that succeeded: an existing ReconcileError condition goes False (never added)."""
    current = st.condition(CONDITION)
    if current is not None and current.get("status") == "True":
        st.set_condition(CONDITION, False, "Reconciled", "the last reconcile pass succeeded", now)
