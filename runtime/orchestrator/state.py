"""The orchestrator's own checkpoint: the next step to generate, its RNG state and restart attempt.

Written atomically after each step's batch, so a restarted orchestrator neither repeats nor skips a step
and draws the same prompts it would have drawn.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "state.json"


@dataclass
class OrchestratorState:
    next_step: int
    rng: random.Random
    attempt: int = 0

    @classmethod
    def fresh(cls, seed: int) -> OrchestratorState:
        return cls(next_step=0, rng=random.Random(seed))


def _encode(rng_state: tuple) -> list:
    version, internal, gauss = rng_state
    return [version, list(internal), gauss]


def save_state(directory: Path, state: OrchestratorState) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    payload = {"nextStep": state.next_step, "attempt": state.attempt, "rng": _encode(state.rng.getstate())}
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)
    return path


def load_state(directory: Path, seed: int) -> OrchestratorState:
    """The saved state with `attempt` incremented (this is a restart), or a fresh one for `seed`."""
    path = directory / STATE_FILE
    if not path.is_file():
        return OrchestratorState.fresh(seed)
    try:
        data = json.loads(path.read_text())
        version, internal, gauss = data["rng"]
        rng = random.Random()
        rng.setstate((version, tuple(internal), gauss))
        return OrchestratorState(next_step=int(data["nextStep"]), rng=rng, attempt=int(data["attempt"]) + 1)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"orchestrator state {path} is unreadable ({exc}); remove it to restart from step 0"
        ) from exc
