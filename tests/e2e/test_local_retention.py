"""Retention on the local tier: a run with a tight `retention` keeps its asset tree under a bound computed
from its own item sizes while it runs, and `rlrun retention --dry-run` lists exactly what the same
planner then deletes (bytes included, checked against the tree's measured size)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import SHORT_RUN, rlrun_local_watching

pytestmark = pytest.mark.e2e
STEPS, EVERY, KEEP, WEIGHTS = 10, 2, 1, 2
TRACKED = ("checkpoints", "weights", "rollouts")


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _tree(run_dir: Path) -> int:
    total = 0
    for name in TRACKED:
        with contextlib.suppress(FileNotFoundError):  # an item deleted while measured
            total += _bytes(run_dir / name)
    return total


def _retention(*args: str) -> dict:
    cli = str(Path(sys.executable).with_name("rlrun"))
    out = subprocess.run([cli, "retention", *args, "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_tree_stays_under_the_bound_and_the_dry_run_is_what_gets_deleted(tmp_path, no_leftover_processes):
    spec = yaml.safe_load(SHORT_RUN.read_text())
    spec["spec"]["orchestrator"]["maxSteps"] = STEPS
    spec["spec"]["trainer"]["checkpointInterval"] = EVERY
    spec["spec"]["retention"] = {"keepLastCheckpoints": KEEP, "weightsKeepLast": WEIGHTS}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run_color-codeword-ci"

    peak, batch = [0], [0]

    def sample() -> None:
        peak[0] = max(peak[0], _tree(run_dir))
        for path in (run_dir / "rollouts").glob("step_*"):
            with contextlib.suppress(FileNotFoundError):  # one batch pruned mid-walk: the others still count
                batch[0] = max(batch[0], _bytes(path))

    code, out = rlrun_local_watching(config, tmp_path, sample)
    assert code == 0, out[-4000:]

    checkpoints = sorted((run_dir / "checkpoints").glob("step_*"))
    weights = sorted((run_dir / "weights").glob("step_*"), key=lambda p: int(p.name.removeprefix("step_")))
    assert [p.name for p in checkpoints] == [f"step_{STEPS}"]
    assert len(weights) == WEIGHTS
    ckpt, export = _bytes(checkpoints[0]), _bytes(weights[0])
    async_steps = spec["spec"]["orchestrator"]["maxAsyncSteps"]
    # while writing one more of each: keep+1 checkpoints, weights+1 exports, and the batches from the
    # oldest kept checkpoint to what the orchestrator wrote ahead (interval + lag + the one in flight)
    bound = (KEEP + 1) * ckpt + (WEIGHTS + 1) * export + (EVERY + async_steps + 2) * batch[0]
    assert 0 < peak[0] <= bound, (peak[0], bound)
    # The run applied its own policy at its last checkpoint: nothing left for it to delete.
    assert _retention(str(run_dir), "--dry-run")["delete"] == []
    tighter = yaml.safe_load(config.read_text())
    tighter["spec"]["retention"]["weightsKeepLast"] = 1
    tighter_file = tmp_path / "tighter.yaml"
    tighter_file.write_text(yaml.safe_dump(tighter))
    report = _retention(str(tighter_file), "--output-dir", str(tmp_path), "--dry-run")
    assert [Path(d["path"]).name for d in report["delete"]] == [weights[0].name]
    before = _tree(run_dir)
    applied = _retention(str(tighter_file), "--output-dir", str(tmp_path))
    assert applied["delete"] == report["delete"] and applied["bytesFreed"] == report["bytesFreed"]
    assert before - _tree(run_dir) == report["bytesFreed"] == export
    assert not weights[0].exists() and weights[1].exists()
