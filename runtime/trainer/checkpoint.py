"""Trainer checkpoints: `checkpoints/step_<n>/state.pt` + a `DONE` marker, resumed from the last complete one.

A checkpoint is written to a hidden temp dir and renamed, and `DONE` is written last inside it, so a kill
at any moment leaves either a complete checkpoint or a dir that resume skips (and the next save replaces).
`n` is the policy version: the number of optimizer steps the state includes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from rlrun.runtime.retention import CHECKPOINT_COMPLETE as COMPLETE
from rlrun.runtime.retention import CHECKPOINT_STATE as STATE
from rlrun.runtime.retention import DONE, step_dirs


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{int(step)}"


def complete_steps(root: Path) -> list[int]:
    """Steps with a complete checkpoint, ascending; half-written dirs (no DONE) are ignored."""
    return step_dirs(root, COMPLETE)


def latest_complete(root: Path) -> int | None:
    steps = complete_steps(root)
    return steps[-1] if steps else None


def save_checkpoint(root: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` (model + optimizer state dicts, counters) for `step` atomically.

    Pruning is the retention planner's alone (runtime/retention.py, applied by the trainer right after):
    it also keeps the best-scored checkpoints (`keepBest`), which a newest-N cut here would delete."""
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
    return final


def link_checkpoint(parent_root: Path, step: int, root: Path, parent: str) -> Path:
    """Make the parent run's checkpoint `step` this run's own `step_<step>` (a fork's first start).

    Files are hard-linked (same volume: no bytes copied, and the parent's pruning or deletion of its tree
    leaves this run's links intact), copied where the filesystem refuses links; DONE comes last, through a
    temp dir and a rename like every save. Raises FileNotFoundError naming the steps the parent has."""
    source = checkpoint_dir(parent_root, step)
    if not (source / DONE).is_file() or not (source / STATE).is_file():
        have = complete_steps(parent_root)
        raise FileNotFoundError(
            f"resumeFrom: run {parent!r} has no complete checkpoint step_{step} under {parent_root} "
            f"(complete: {', '.join(f'step_{s}' for s in have) or 'none'}); the parent must be on this "
            "run's volume (storage.existingClaim) or output dir"
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".step_{step}.link-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in (STATE, DONE):
        try:
            os.link(source / name, tmp / name)
        except OSError:  # another filesystem, or links not allowed: copy
            shutil.copy2(source / name, tmp / name)
    final = checkpoint_dir(root, step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def shape_mismatch(checkpoint: dict[str, Any], model: dict[str, Any]) -> str | None:
    """Why a checkpoint's model state cannot load into `model`'s state dict (names and shapes), or None."""
    missing = sorted(set(model) - set(checkpoint))
    extra = sorted(set(checkpoint) - set(model))
    if missing or extra:
        return (
            f"{len(missing)} parameters missing from the checkpoint (e.g. {missing[:3]}), {len(extra)} "
            f"unknown to the model (e.g. {extra[:3]})"
        )
    for name, tensor in model.items():
        if tuple(checkpoint[name].shape) != tuple(tensor.shape):
            return f"{name} has shape {tuple(checkpoint[name].shape)} in the checkpoint, {tuple(tensor.shape)} here"
    return None


def load_checkpoint(root: Path, step: int) -> dict[str, Any]:
    path = checkpoint_dir(root, step)
    if not (path / DONE).is_file():
        raise FileNotFoundError(f"checkpoint {path} has no {DONE} marker: it was not completely written")
    return torch.load(path / STATE, map_location="cpu", weights_only=False)
