"""What a watcher of a run sees: one `RunEvent` per change of phase, progress, conditions or restarts, and
the terminal outcome. Pure functions over `RLRunStatus`, shared by the cluster and the local backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlrun.operator.api import ProgressStatus, RLRun, RLRunStatus

TERMINAL_PHASES = ("Succeeded", "Failed")
"""Phases a run never leaves (only deletion follows, by TTL or by hand)."""

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


def is_terminal(phase: str | None) -> bool:
    return phase in TERMINAL_PHASES


def _progress_key(p: ProgressStatus | None) -> tuple[object, ...] | None:
    if p is None:
        return None
    return (p.attempt, p.step, p.max_steps, p.reward_mean, p.updated_at)


def changes(before: RLRunStatus | None, after: RLRunStatus | None) -> tuple[str, ...]:
    """What a watcher cares about that differs: 'phase', 'progress', 'restarts', 'condition/<type>'.

    Component counts, observedGeneration and the like change often and are left out: they are in
    `event.run` for whoever wants them."""
    b, a = before or RLRunStatus(), after or RLRunStatus()
    out = []
    if (b.phase, b.reason) != (a.phase, a.reason):
        out.append("phase")
    if _progress_key(b.progress) != _progress_key(a.progress):
        out.append("progress")
    if (b.restarts or 0) != (a.restarts or 0):
        out.append("restarts")
    old = {c.type: (c.status, c.reason) for c in b.conditions}
    new = {c.type: (c.status, c.reason) for c in a.conditions}
    out += [f"condition/{t}" for t in sorted(old.keys() | new.keys()) if old.get(t) != new.get(t)]
    return tuple(out)


@dataclass(frozen=True)
class RunEvent:
    """A change of one run. `run` is the whole object as the server (or local launcher) reported it."""

    type: EventType
    run: RLRun
    changed: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.run.metadata.name

    @property
    def phase(self) -> str | None:
        return self.run.status.phase if self.run.status else None

    @property
    def progress(self) -> ProgressStatus | None:
        return self.run.status.progress if self.run.status else None

    @property
    def terminal(self) -> bool:
        return self.type == "DELETED" or is_terminal(self.phase)

    def describe(self) -> str:
        """One human line: `name phase step/max reward r restarts n (changed: ...)`."""
        p = self.progress
        step = f"{p.step}/{p.max_steps}" if p and p.step is not None else "-"
        reward = f"{p.reward_mean:.3f}" if p and p.reward_mean is not None else "-"
        restarts = self.run.status.restarts if self.run.status and self.run.status.restarts else 0
        phase = "Deleted" if self.type == "DELETED" else (self.phase or "-")
        return (
            f"{self.name} {phase} step {step} reward {reward} restarts {restarts} ({', '.join(self.changed)})"
        )


@dataclass(frozen=True)
class Outcome:
    """What `wait` returns: the terminal phase, the final progress and the run as last seen."""

    phase: str
    progress: ProgressStatus | None
    run: RLRun

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded"
