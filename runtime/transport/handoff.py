"""Training-batch hand-off from the orchestrator to the trainer master, through the shared run volume.

Layout: `<rollouts_dir>/step_<n>/batch.msgpack`, one msgspec-msgpack `TrainingBatch` per step. The writer
creates a temp file in the same folder and `os.replace`s it into place, so a reader either sees no file or
the whole batch, never a partial one (also on NFS-like RWX volumes, where rename is atomic per folder).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from rlrun.runtime.assets import atomic_write_bytes
from rlrun.runtime.wire import TrainingBatch

BATCH_FILE = "batch.msgpack"
_STEP_DIR = re.compile(r"^step_(0|[1-9][0-9]*)$")
_decoder = msgspec.msgpack.Decoder(TrainingBatch)


def batch_path(rollouts_dir: Path, step: int) -> Path:
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"Training-batch step must be a non-negative int, got {step!r}")
    return Path(rollouts_dir) / f"step_{step}" / BATCH_FILE


def write_batch(rollouts_dir: Path, batch: TrainingBatch) -> Path:
    """Write `batch` as step_<batch.step>/batch.msgpack atomically; return its path."""
    path = batch_path(rollouts_dir, batch.step)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, msgspec.msgpack.encode(batch))
    return path


def read_batch(
    rollouts_dir: Path,
    step: int,
    poll_seconds: float = 0.2,
    timeout: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> TrainingBatch:
    """Wait for step <step>'s batch and decode it.

    `timeout=None` waits forever (the orchestrator may take long to generate); `should_stop()` returning True
    ends the wait with InterruptedError (e.g. on shutdown); `on_wait()` runs at every poll (the trainer
    master's heartbeat: waiting is progress, a wedged read is not).
    """
    path = batch_path(rollouts_dir, step)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not path.exists():
        if should_stop is not None and should_stop():
            raise InterruptedError(f"Stopped waiting for the training batch {path}")
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"Timed out after {timeout:g}s waiting for the training batch {path}")
        if on_wait is not None:
            on_wait()
        time.sleep(poll_seconds)
    try:
        batch = _decoder.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise ValueError(f"Training batch {path} is not a valid TrainingBatch: {exc}") from exc
    if batch.step != step:
        raise ValueError(f"Training batch {path} holds step {batch.step}, expected step {step}")
    return batch


def latest_batch_step(rollouts_dir: Path) -> int | None:
    """The highest step with a complete batch file under `rollouts_dir`, or None if there is none."""
    root = Path(rollouts_dir)
    if not root.is_dir():
        return None
    steps = [
        int(match.group(1))
        for entry in root.iterdir()
        if (match := _STEP_DIR.match(entry.name)) and (entry / BATCH_FILE).is_file()
    ]
    return max(steps, default=None)
