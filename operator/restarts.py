"""Group restart decisions (trainer group, orchestrator): counted, backed off, bounded. Pure.

The restart generation is data (JobSet's shape): a counter and an attempt number in status, and an
attempt label on the children. A failure only bumps the numbers and records when the next attempt may
start; the following passes delete children of older attempts and create the new attempt once the
backoff has passed. Because all of it lives in status, an operator restart neither forgets a restart
nor skips a backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from statistics import median
from typing import Literal

from rlrun.operator.api import FailurePolicy


@dataclass(frozen=True)
class GroupState:
    """Restart bookkeeping of one group, as stored in status."""

    restarts: int = 0
    attempt: int = 0
    not_before: datetime | None = None
    """The current attempt's children may not be created before this time (backoff)."""


@dataclass(frozen=True)
class Decision:
    action: Literal["restart", "give_up"]
    state: GroupState
    message: str


def on_group_failure(
    policy: FailurePolicy, state: GroupState, now: datetime, group: str, cause: str
) -> Decision:
    """Decide what a failure of `group` (e.g. 'trainer') at attempt `state.attempt` leads to. The limits
    and the backoff formula are the spec's own (`FailurePolicy`): one source for both."""
    if state.restarts >= policy.max_restarts:
        return Decision(
            "give_up",
            state,
            f"{group} failed ({cause}) after {state.restarts} restarts; failurePolicy.maxRestarts is "
            f"{policy.max_restarts} (raise it to allow more restarts)",
        )
    delay = policy.backoff(state.restarts)
    restarts = state.restarts + 1
    new = replace(
        state, restarts=restarts, attempt=state.attempt + 1, not_before=now + timedelta(seconds=delay)
    )
    return Decision(
        "restart",
        new,
        f"{group} failed ({cause}); restart {restarts}/{policy.max_restarts} as attempt {new.attempt} "
        f"after {delay:g}s backoff",
    )


# ------------------------------------------------------------------------------------- stall detection


@dataclass(frozen=True)
class StallPolicy:
    factor: float = 5.0
    """A run is stalled after `factor` x the median step time without a step advance..."""
    floor_seconds: float = 300.0
    """...but never sooner than this (model loading, a slow first weight reload)."""


def stall_threshold(policy: StallPolicy, step_seconds: list[float]) -> float:
    """Seconds without a step advance that count as a stall."""
    return (
        max(policy.floor_seconds, policy.factor * median(step_seconds))
        if step_seconds
        else policy.floor_seconds
    )


def stalled(policy: StallPolicy, step_seconds: list[float], since: datetime | None, now: datetime) -> bool:
    """True when nothing advanced since `since` (the later of the last step advance and the start of the
    current attempt) for longer than the threshold. No step seen yet (`since` None) is never a stall."""
    return since is not None and (now - since).total_seconds() > stall_threshold(policy, step_seconds)
