"""The trainer refuses a torchrun group whose size is not the run's trainer.nodes x processesPerNode
(before, both fields travelled in the config and nothing read them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.trainer.main import world_size_mismatch


def _cfg(root: Path, nodes: int, per_node: int) -> RuntimeConfig:
    cfg = RuntimeConfig(asset_root=str(root), run_id="w")
    cfg.trainer.nodes, cfg.trainer.processes_per_node = nodes, per_node
    return cfg


def test_the_group_must_have_the_runs_shape(tmp_path):
    assert world_size_mismatch(_cfg(tmp_path, 2, 4), {"WORLD_SIZE": "8"}) is None
    assert world_size_mismatch(_cfg(tmp_path, 1, 1), {}) is None
    why = world_size_mismatch(_cfg(tmp_path, 2, 4), {"WORLD_SIZE": "4"})
    assert why is not None and "4 ranks" in why and "trainer.nodes 2 x processesPerNode 4 = 8" in why


def test_the_trainer_process_stops_with_the_reason_before_any_rendezvous(tmp_path):
    cfg = _cfg(tmp_path, 1, 1)
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.json").write_text(cfg.to_json())
    env = {**os.environ, "RLRUN_CONFIG": str(cfg.run_dir / "config.json"), "WORLD_SIZE": "2", "RANK": "0"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "rlrun.runtime.trainer"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "torchrun started 2 ranks" in proc.stderr and "= 1" in proc.stderr
