"""Graceful preemption on the local tier: SIGTERM reaches the real torchrun trainer's process group (the
launcher forwards it the way the kubelet does on suspend, eviction or drain), the ranks checkpoint within
`trainer.terminationGracePeriodSeconds`, and `--resume` continues at exactly that checkpoint.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml

from rlrun.runtime.config import attempt_log_dir, log_attempts

from .conftest import SHORT_RUN, rlrun_local_file, trained_steps

pytestmark = pytest.mark.e2e
RUN = "run_color-codeword-ci"
MAX_STEPS = 8
SIGNAL_AFTER = 3  # SIGTERM once three steps are trained


def _trainer_steps(run_dir: Path) -> list[int]:
    path = run_dir / "trainer" / "metrics_rank0.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def _checkpoints(run_dir: Path) -> list[int]:
    root = run_dir / "checkpoints"
    return sorted(int(p.name.removeprefix("step_")) for p in root.glob("step_*") if (p / "DONE").is_file())


def test_sigterm_checkpoints_within_the_grace_window_and_resume_continues_there(
    tmp_path, no_leftover_processes
):
    spec = yaml.safe_load(SHORT_RUN.read_text())
    spec["spec"]["orchestrator"]["maxSteps"] = MAX_STEPS
    spec["spec"]["trainer"]["checkpointInterval"] = 1000  # no periodic checkpoint: only SIGTERM writes one
    spec["spec"]["trainer"]["terminationGracePeriodSeconds"] = 60
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / RUN

    proc = rlrun_local_file(config, tmp_path, wait=False)
    deadline = time.monotonic() + 300
    while trained_steps(run_dir) < SIGNAL_AFTER:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"not {SIGNAL_AFTER} steps within 300 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    out, _ = proc.communicate(timeout=120)
    assert time.monotonic() - sent < 60, "the stop outlived the grace window"
    assert proc.returncode == 130, out[-3000:]

    [saved] = _checkpoints(run_dir)  # written during the grace window: nothing else writes one here
    trained = _trainer_steps(run_dir)
    assert SIGNAL_AFTER <= saved < MAX_STEPS, (saved, trained)
    # Every finished step is in it: the first attempt trained steps 0..saved-1, no more, no less.
    assert trained == list(range(saved)), (saved, trained)
    log = (attempt_log_dir(run_dir, 0) / "trainer.log").read_text()
    assert f"the resumed run starts at step {saved}" in log, log[-3000:]
    state = json.loads((run_dir / "orchestrator" / "state.json").read_text())
    assert state["nextStep"] >= saved  # the orchestrator kept its position (batches it wrote are kept)

    code, out = rlrun_local_file(config, tmp_path, "--resume")
    assert code == 0, out[-4000:]
    resumed = _trainer_steps(run_dir)[len(trained) :]
    assert resumed == list(range(saved, MAX_STEPS)), resumed  # first step: the one after the checkpoint
    resumed_log = (attempt_log_dir(run_dir, log_attempts(run_dir)[-1]) / "trainer.log").read_text()
    assert f"resumed from checkpoint step {saved}" in resumed_log
