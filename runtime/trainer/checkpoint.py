"""Trainer checkpoints: `checkpoints/step_<n>/state.pt` + a `DONE` marker, resumed from the last complete one.

A checkpoint is written to a hidden temp dir and renamed, and `DONE` is written last inside it, so a kill
at any moment leaves either a complete checkpoint or a dir that resume skips (and the next save replaces).
`n` is the policy version: the number of optimizer steps the state includes.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

DONE = "DONE"
STATE = "state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{int(step)}"


def complete_steps(root: Path) -> list[int]:
    """Steps with a complete checkpoint, ascending; half-written dirs (no DONE) are ignored."""
    if not root.is_dir():
        return []
    steps = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / DONE).is_file() and (child / STATE).is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def latest_complete(root: Path) -> int | None:
    steps = complete_steps(root)
    return steps[-1] if steps else None


def save_checkpoint(root: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `state` (model + optimizer state dicts, counters) for `step` atomically; prune to `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, step)
    tmp = root / f".step_{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(state, tmp / STATE)
    (tmp / DONE).write_text(f"{step}\n")
    if final.exists():  # an incomplete leftover from a killed save, or a re-save after resume
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in complete_steps(root)[:-keep]:
        shutil.rmtree(checkpoint_dir(root, old), ignore_errors=True)
    return final


def load_checkpoint(root: Path, step: int) -> dict[str, Any]:
    path = checkpoint_dir(root, step)
    if not (path / DONE).is_file():
        raise FileNotFoundError(f"checkpoint {path} has no {DONE} marker: it was not completely written")
    return torch.load(path / STATE, map_location="cpu", weights_only=False)
