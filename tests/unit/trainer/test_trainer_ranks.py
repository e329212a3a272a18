"""Two real torchrun ranks (gloo) train on text batches written to disk, checkpoint, and resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.local import free_port, native_thread_limited_env
from rlrun.runtime.models.tiny import resolve_model
from rlrun.runtime.trainer.checkpoint import complete_steps
from rlrun.runtime.transport.handoff import write_batch
from rlrun.runtime.wire import TrainingBatch, TrainingSample, pack_floats, pack_ints


def _config(root: Path, max_steps: int) -> RuntimeConfig:
    cfg = RuntimeConfig(asset_root=str(root), run_id="t")
    cfg.orchestrator.group_size, cfg.orchestrator.batch_size, cfg.orchestrator.max_steps = 2, 6, max_steps
    cfg.trainer.checkpoint_interval, cfg.trainer.micro_batch_size = 2, 2
    cfg.trainer.processes_per_node = 2  # the torchrun below
    cfg.transport.base_port, cfg.transport.host, cfg.transport.publish_grace_ms = (
        free_port(3),
        "127.0.0.1",
        50,
    )
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "config.json").write_text(cfg.to_json())
    return cfg


def _torchrun(cfg: RuntimeConfig) -> None:
    env = native_thread_limited_env({**os.environ, "RLRUN_CONFIG": str(cfg.run_dir / "config.json")})
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", "rlrun.runtime.trainer"]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _metrics(cfg: RuntimeConfig, rank: int) -> list[dict]:
    path = cfg.run_dir / "trainer" / f"metrics_rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_ranks_train_checkpoint_and_resume(tmp_path):
    cfg = _config(tmp_path, max_steps=2)
    resolve_model(cfg.model.name, cfg.run_dir)
    for step in range(3):
        samples = [
            TrainingSample(
                pack_ints([1, 2, 3]), pack_ints([4, 5]), pack_floats([-5.0, -5.0]), (-1.0) ** i, 0.0
            )
            for i in range(6)
        ]
        write_batch(cfg.run_dir / "rollouts", TrainingBatch(step, samples))
    base = AutoModelForImageTextToText.from_pretrained(str(cfg.run_dir / "model")).state_dict()

    _torchrun(cfg)
    assert complete_steps(cfg.run_dir / "checkpoints") == [2]
    # Batches 0 and 1 are consumed and checkpointed past: pruned. Batch 2 is what a resume trains on next.
    assert sorted(p.name for p in (cfg.run_dir / "rollouts").iterdir()) == ["step_2"]
    for rank in (0, 1):
        records = _metrics(cfg, rank)
        assert [r["step"] for r in records] == [0, 1] and all(r["world_size"] == 2 for r in records)
        assert sum(r["samples"] for r in records) > 0
    # 6 samples over 2 ranks with micro-batches of 2: every sample trained exactly once per step.
    assert sum(r["samples"] for rank in (0, 1) for r in _metrics(cfg, rank) if r["step"] == 0) == 6
    exported = load_file(str(cfg.run_dir / "weights" / "step_2" / "model.safetensors"))
    assert exported.keys() == base.keys()
    assert any(not exported[k].equal(base[k]) for k in base), "two optimizer steps changed no weight"

    cfg = _config(tmp_path, max_steps=3)  # resume: picks up at step 2 from checkpoint step_2
    _torchrun(cfg)
    assert [r["step"] for r in _metrics(cfg, 0)] == [0, 1, 2]
    assert complete_steps(cfg.run_dir / "checkpoints") == [2, 3]
    assert sorted(p.name for p in (cfg.run_dir / "rollouts").iterdir()) == ["step_2"]  # for checkpoint 2
    assert (cfg.run_dir / "weights" / "step_3" / "DONE").is_file()


def _weights_delta(run_dir: Path, older: int, newer: int) -> float:
    a = load_file(str(run_dir / "weights" / f"step_{older}" / "model.safetensors"))
    b = load_file(str(run_dir / "weights" / f"step_{newer}" / "model.safetensors"))
    return sum(float((b[k].float() - a[k].float()).norm() ** 2) for k in a) ** 0.5


def test_a_step_trained_on_few_informative_groups_moves_the_policy_less(tmp_path):
    """Batch 1 holds one of its step's three groups (the orchestrator dropped two degenerate ones): with
    `scaleStepBySignal` its learning rate, so its update (Adam's, given the same moments), is a third."""
    deltas = {}
    for scaled in (True, False):
        cfg = _config(tmp_path / str(scaled), max_steps=2)
        cfg.trainer.scale_step_by_signal = scaled
        (cfg.run_dir / "config.json").write_text(cfg.to_json())
        resolve_model(cfg.model.name, cfg.run_dir)
        for step, groups in ((0, (0, 1, 2)), (1, (3,))):
            samples = [
                TrainingSample(
                    pack_ints([1, 2, 3]),
                    pack_ints([4 + i, 5]),
                    pack_floats([-5.0, -5.0]),
                    (-1.0) ** i,
                    0.0,
                    group=group,
                )
                for group in groups
                for i in range(2)
            ]
            write_batch(cfg.run_dir / "rollouts", TrainingBatch(step, samples))
        _torchrun(cfg)
        for rank in (0, 1):
            assert [r["signal_fraction"] for r in _metrics(cfg, rank)] == [1.0, 1 / 3]
        deltas[scaled] = _weights_delta(cfg.run_dir, 1, 2)
    assert deltas[True] == pytest.approx(deltas[False] / 3, rel=0.02), deltas
