"""Run budgets (`spec.budget`): GPU-hours used, integrated pass by pass, and when a budget is spent. Pure.

GPU time is accounted from the pods themselves: status holds the GPU-seconds up to `gpuAccountedAt`
and the GPUs held since (`gpusInUse`); a pass that sees another GPU count folds the interval in at the
old count and records the new one. Between changes the integral is extended on the fly (and written at
most every REFRESH_SECONDS), so a quiet run's status stays byte-identical from pass to pass: a status
write is itself an RLRun event that triggers a pass. Pods of every attempt count, so restarts (and their
start-up time) are included; GPUs of pods still terminating count until they are gone. The plan
requeues itself for the moment a budget would be spent at the current rate.

A spent budget ends the run as Succeeded / BudgetExhausted: the run did what it was told (train until
the budget is used), and its checkpoint and weights are as usable as after maxSteps. Releasing the
workloads deletes the trainer pods gracefully, so the trainer checkpoints the step in flight within its
terminationGracePeriodSeconds (runtime/trainer/preemption.py): the stop lands on a checkpoint boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rlrun.operator.api import Budget

BUDGET_EXHAUSTED = "BudgetExhausted"
REFRESH_SECONDS = 60.0


@dataclass
class GpuAccount:
    """The status part of the GPU-time integral."""

    gpu_seconds: float = 0.0
    gpus_in_use: int = 0
    accounted_at: datetime | None = None

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600

    def seconds_at(self, now: datetime) -> float:
        """GPU-seconds used up to `now`."""
        since = (now - self.accounted_at).total_seconds() if self.accounted_at is not None else 0.0
        return self.gpu_seconds + self.gpus_in_use * max(0.0, since)


def account(acc: GpuAccount, gpus_now: int, now: datetime, *, settle: bool = False) -> None:
    """Fold the GPU time up to `now` in and record `gpus_now`, when the count changed, the last fold is
    REFRESH_SECONDS old, or `settle` (a terminal decision records the exact figure)."""
    stale = acc.accounted_at is None or (now - acc.accounted_at).total_seconds() >= REFRESH_SECONDS
    if gpus_now == acc.gpus_in_use and not stale and not settle:
        return
    acc.gpu_seconds = acc.seconds_at(now)
    acc.gpus_in_use, acc.accounted_at = gpus_now, now


def spent(budget: Budget, acc: GpuAccount, start: datetime | None, now: datetime) -> str | None:
    """Why the budget is spent, or None."""
    used = acc.seconds_at(now) / 3600
    if budget.max_gpu_hours is not None and used >= budget.max_gpu_hours:
        return f"used {used:.3f} GPU-hours of spec.budget.maxGPUHours={budget.max_gpu_hours:g}"
    if budget.max_wallclock_seconds is not None and start is not None:
        elapsed = (now - start).total_seconds()
        if elapsed >= budget.max_wallclock_seconds:
            return f"ran {elapsed:.0f}s of spec.budget.maxWallclockSeconds={budget.max_wallclock_seconds}"
    return None


def seconds_left(budget: Budget, acc: GpuAccount, start: datetime | None, now: datetime) -> float | None:
    """When the next pass should look again: the earliest moment a budget is spent at the current rate."""
    left: list[float] = []
    if budget.max_gpu_hours is not None and acc.gpus_in_use:
        left.append((budget.max_gpu_hours * 3600 - acc.seconds_at(now)) / acc.gpus_in_use)
    if budget.max_wallclock_seconds is not None and start is not None:
        left.append(budget.max_wallclock_seconds - (now - start).total_seconds())
    return min(left) if left else None
