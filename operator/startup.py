"""Where a trainer attempt's start-up went: per attempt, seconds from its Job's creation to each phase. Pure.

| field                    | source                                                                   |
|--------------------------|--------------------------------------------------------------------------|
| scheduledSeconds         | every pod's `PodScheduled=True` (the last of the gang), from the pods    |
| containersStartedSeconds | every container running (`startedAt`): images pulled, from the pods      |
| rendezvousSeconds        | every rank joined the process group: the trainer's `trainer/startup.json`, |
| modelLoadedSeconds       | policy and checkpoint loaded, relayed by the orchestrator's progress     |
| firstStepSeconds         | the attempt's first step finished                                        |

An attempt whose figures are complete gets one Event, `StartupTimings`, with all of them. The last
`KEEP` attempts stay in status. An attempt's entry also keeps what its trainer found in the stack dumps of
the attempt before (`previousAttemptStacks`, runtime/stackdump.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

KEEP = 8
PHASES = (
    ("scheduledSeconds", "scheduled"),
    ("containersStartedSeconds", "containers started"),
    ("rendezvousSeconds", "rendezvous"),
    ("modelLoadedSeconds", "model loaded"),
    ("firstStepSeconds", "first step"),
)


@dataclass(frozen=True)
class GangTimes:
    """When the last pod of an attempt was scheduled and when the last one's containers all ran (None
    until every one of `pods` got there)."""

    pods: int
    scheduled: datetime | None
    started: datetime | None


def _parse(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def _seconds(since: datetime, at: Any) -> float | None:
    moment = _parse(at)
    return None if moment is None else round(max(0.0, (moment - since).total_seconds()), 3)


def record(
    timings: list[dict[str, Any]],
    attempt: int,
    created: datetime | None,
    parallelism: int,
    gang: GangTimes | None,
    runtime: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """`timings` with the current attempt's entry filled in as far as known, and the Event message when
    the entry just became complete. `runtime` is the relayed `trainerStartup` (used for its attempt only)."""
    if created is None:
        return timings, None
    entries = [dict(e) for e in timings]
    entry = next((e for e in entries if e.get("attempt") == attempt), None)
    if entry is None:
        entry = {"attempt": attempt}
        entries = [*entries, entry][-KEEP:]
    before = all(entry.get(key) is not None for key, _ in PHASES)
    if gang is not None and gang.pods >= parallelism:
        entry.setdefault("scheduledSeconds", _seconds(created, gang.scheduled))
        entry.setdefault("containersStartedSeconds", _seconds(created, gang.started))
        for key in ("scheduledSeconds", "containersStartedSeconds"):
            if entry[key] is None:
                del entry[key]
    if runtime is not None and runtime.get("attempt") == attempt:
        for key, field in (
            ("rendezvousSeconds", "rendezvousAt"),
            ("modelLoadedSeconds", "modelLoadedAt"),
            ("firstStepSeconds", "firstStepAt"),
        ):
            if entry.get(key) is None and (value := _seconds(created, runtime.get(field))) is not None:
                entry[key] = value
    complete = all(entry.get(key) is not None for key, _ in PHASES)
    if complete and not before:
        figures = ", ".join(f"{label} {entry[key]:g}s" for key, label in PHASES)
        return entries, f"trainer attempt {attempt} start-up after its Job was created: {figures}"
    return entries, None


def note_previous_stacks(
    timings: list[dict[str, Any]], attempt: int, runtime: dict[str, Any] | None
) -> tuple[list[dict[str, Any]], str | None]:
    """`timings` with the relayed diagnosis of attempt-1's stacks in `attempt`'s entry, and that diagnosis
    when it was not there before (once per attempt, whatever the number of passes or operator replicas)."""
    stacks = (
        (runtime or {}).get("previousAttemptStacks") if (runtime or {}).get("attempt") == attempt else None
    )
    entries = [dict(e) for e in timings]
    entry = next((e for e in entries if e.get("attempt") == attempt), None)
    if not stacks or entry is None or entry.get("previousAttemptStacks"):
        return timings, None
    entry["previousAttemptStacks"] = stacks
    return entries, stacks
