"""The orchestrator's own checkpoint: its position (next step, RNG, attempt, prompt counters) and the ledger.

The position (`state.json`) is written atomically twice per step: once when step n's generation starts
(`generating = n`, the RNG still *before* n's seed draws) and once after n's batch and ledger entry are on the
volume (`next_step = n + 1`). A restarted orchestrator therefore neither repeats nor skips a step, and a step
whose rollouts were in flight at the crash is discarded and regenerated with the same group ids and sampling
seeds (it counts those groups in `regenerated`). The ledger (`ledger/step_<n>.json`, atomic, one per step)
records which groups (run-wide group id, example id, seed) step n consumed and which of them were filtered.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlrun.runtime.assets import atomic_write_bytes

STATE_FILE = "state.json"
LEDGER_DIR = "ledger"


@dataclass
class PromptCounts:
    """Run totals of prompt groups: consumed by a step, filtered out of it, regenerated after a restart."""

    consumed: int = 0
    filtered: int = 0
    regenerated: int = 0


@dataclass
class OrchestratorState:
    next_step: int
    rng: random.Random
    attempt: int = 0
    prompts: PromptCounts = field(default_factory=PromptCounts)
    generating: int | None = None
    """The step whose generation started but whose batch is not yet recorded (None between steps)."""

    @classmethod
    def fresh(cls, seed: int) -> OrchestratorState:
        return cls(next_step=0, rng=random.Random(seed))


def write_atomic(path: Path, text: str) -> Path:
    """`text` into `path` through a temp file in the same folder, fsynced, then renamed: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    return path


def _encode(rng_state: tuple) -> list:
    version, internal, gauss = rng_state
    return [version, list(internal), gauss]


def save_state(directory: Path, state: OrchestratorState) -> Path:
    p = state.prompts
    payload = {
        "nextStep": state.next_step,
        "attempt": state.attempt,
        "rng": _encode(state.rng.getstate()),
        "generating": state.generating,
        "prompts": {"consumed": p.consumed, "filtered": p.filtered, "regenerated": p.regenerated},
    }
    return write_atomic(directory / STATE_FILE, json.dumps(payload))


def load_state(directory: Path, seed: int) -> OrchestratorState:
    """The saved state with `attempt` incremented (this is a restart), or a fresh one for `seed`. A step
    that was generating when the previous attempt died is counted as regenerated (it will be, from the
    saved RNG)."""
    path = directory / STATE_FILE
    if not path.is_file():
        return OrchestratorState.fresh(seed)
    try:
        data = json.loads(path.read_text())
        version, internal, gauss = data["rng"]
        rng = random.Random()
        rng.setstate((version, tuple(internal), gauss))
        prompts = PromptCounts(**{k: int(v) for k, v in data.get("prompts", {}).items()})
        generating = data.get("generating")
        return OrchestratorState(
            next_step=int(data["nextStep"]),
            rng=rng,
            attempt=int(data["attempt"]) + 1,
            prompts=prompts,
            generating=None if generating is None else int(generating),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"orchestrator state {path} is unreadable ({exc}); remove it to restart from step 0"
        ) from exc


def ledger_path(directory: Path, step: int) -> Path:
    return directory / LEDGER_DIR / f"step_{int(step)}.json"


def write_ledger(directory: Path, step: int, attempt: int, groups: list[dict[str, Any]]) -> Path:
    """Step `step`'s entry: every group it consumed as {group, example, seed, kept, filtered}."""
    entry = {"step": step, "attempt": attempt, "groups": groups}
    return write_atomic(ledger_path(directory, step), json.dumps(entry))


def read_ledger(directory: Path) -> dict[int, dict[str, Any]]:
    """Every recorded step's ledger entry, by step (what the run consumed so far)."""
    root = directory / LEDGER_DIR
    entries = {}
    for path in sorted(root.glob("step_*.json")) if root.is_dir() else []:
        entry = json.loads(path.read_text())
        entries[int(entry["step"])] = entry
    return entries
