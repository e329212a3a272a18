"""Fork lineage on the local tier: run A to step N, fork B from A's checkpoint N in the same output dir;
B's first trainer step is N, taken from A's weights (parameter checksums compared), and A's checkpoint is
hard-linked, not copied."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rlrun.runtime.config import attempt_log_dir
from rlrun.runtime.trainer.checkpoint import save_checkpoint

from .conftest import SHORT_RUN, rlrun_local_file

pytestmark = pytest.mark.e2e
N = 3


def _config(tmp_path: Path, name: str, max_steps: int, resume_from: dict | None = None) -> Path:
    spec = yaml.safe_load(SHORT_RUN.read_text())
    spec["metadata"]["name"] = name
    spec["spec"]["orchestrator"]["maxSteps"] = max_steps
    spec["spec"]["trainer"]["checkpointInterval"] = N
    if resume_from:
        spec["spec"]["resumeFrom"] = resume_from
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _checksum(weights: Path) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(weights / "model.safetensors").items()):
        digest.update(name.encode() + tensor.float().numpy().tobytes())
    return digest.hexdigest()


def _trainer_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "trainer" / "metrics_rank0.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if line.strip()]


def test_fork_starts_at_the_parents_checkpoint_with_its_weights(tmp_path, no_leftover_processes):
    code, out = rlrun_local_file(_config(tmp_path, "parent", N), tmp_path)
    assert code == 0, out[-4000:]
    parent = tmp_path / "run_parent"
    assert (parent / "checkpoints" / f"step_{N}" / "DONE").is_file()

    code, out = rlrun_local_file(_config(tmp_path, "child", N + 2, {"run": "parent", "step": N}), tmp_path)
    assert code == 0, out[-4000:]
    child = tmp_path / "run_child"
    assert _trainer_steps(child) == [N, N + 1]  # B's first step is the one after A's checkpoint
    # the weights B served before its first step are A's version N, bit for bit
    assert _checksum(child / "weights" / f"step_{N}") == _checksum(parent / "weights" / f"step_{N}")
    linked = child / "checkpoints" / f"step_{N}" / "state.pt"
    assert linked.stat().st_ino == (parent / "checkpoints" / f"step_{N}" / "state.pt").stat().st_ino
    assert (
        "forked from run parent checkpoint step 3" in (attempt_log_dir(child, 0) / "trainer.log").read_text()
    )


def test_a_fork_of_a_missing_checkpoint_is_refused_before_any_role_starts(tmp_path):
    code, out = rlrun_local_file(_config(tmp_path, "child", 5, {"run": "parent", "step": N}), tmp_path)
    assert code != 0
    assert f"resumeFrom: no complete checkpoint step_{N} in {tmp_path / 'run_parent'}" in out, out[-2000:]
    assert not (tmp_path / "run_child" / "logs").exists()


def test_a_fork_onto_another_model_fails_at_start_naming_the_mismatch(tmp_path, no_leftover_processes):
    """A checkpoint of another shape (written by the real saver) fails the start naming the tensor."""
    save_checkpoint(
        tmp_path / "run_parent" / "checkpoints",
        N,
        {"model": {"model.embed_tokens.weight": torch.zeros(2, 2)}},
    )
    code, out = rlrun_local_file(_config(tmp_path, "child", 5, {"run": "parent", "step": N}), tmp_path)
    assert code == 1, out[-3000:]
    assert "does not fit model 'builtin:tiny-qwen2-vl'" in out, out[-3000:]
