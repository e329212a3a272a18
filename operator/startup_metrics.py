"""Trainer start-up timings (operator/startup.py) as Prometheus metrics, beside status and the Event.

Two views: `rlrun_trainer_startup_seconds{namespace,run,phase}` holds the newest attempt's figures as far
as known (where the current start is), and `rlrun_trainer_startup_phase_seconds{phase}` observes each
attempt once, when its figures are complete (how long starts take across runs, with no per-run series to
grow). Status stays the source of truth; these mirror it after each successful status write.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Gauge, Histogram

from rlrun.operator.startup import PHASES

LATEST = Gauge(
    "rlrun_trainer_startup_seconds",
    "Seconds from the newest trainer attempt's Job creation to the end of each start-up phase (as far as "
    "known; a mirror of RLRun status.startup).",
    ["namespace", "run", "phase"],
)
COMPLETED = Histogram(
    "rlrun_trainer_startup_phase_seconds",
    "Seconds from a trainer attempt's Job creation to the end of each start-up phase, observed once per "
    "attempt when all its phases are known.",
    ["phase"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)


def phase_label(key: str) -> str:
    """`containersStartedSeconds` -> `containers_started` (the status field names the phase)."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key.removesuffix("Seconds")).lower()


def publish(
    namespace: str, run: str, timings: Sequence[Mapping[str, Any]], completed: Mapping[str, Any] | None
) -> None:
    """Mirror `timings` (status.startup, newest attempt last); `completed` is the entry that became
    complete in this pass, if any (observed once)."""
    newest = timings[-1] if timings else {}
    for key, _ in PHASES:
        value = newest.get(key)
        if value is None:  # a new attempt: the previous one's figure is not this one's
            with contextlib.suppress(KeyError):
                LATEST.remove(namespace, run, phase_label(key))
        else:
            LATEST.labels(namespace, run, phase_label(key)).set(value)
    if completed is not None:
        for key, _ in PHASES:
            COMPLETED.labels(phase_label(key)).observe(completed[key])


def forget(namespace: str, run: str) -> None:
    for key, _ in PHASES:
        with contextlib.suppress(KeyError):
            LATEST.remove(namespace, run, phase_label(key))
