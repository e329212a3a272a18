"""`retention.keepBest` on the local tier: a real run that checkpoints every step with keepLastCheckpoints=1
keeps, besides its newest checkpoints, the one whose own policy version scored the best rollout reward
(runtime/retention.py), while the newer, worse ones rotate out as the run goes; `rlrun retention --dry-run`
names it with its score."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlrun.runtime.retention import best_checkpoints, read_version_scores

from .conftest import SHORT_RUN, rlrun_local_watching

pytestmark = pytest.mark.e2e
STEPS = 12


def _retention(*args: str) -> dict:
    cli = str(Path(sys.executable).with_name("rlrun"))
    out = subprocess.run([cli, "retention", *args, "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_best_checkpoint_survives_while_newer_worse_ones_rotate(tmp_path, no_leftover_processes):
    spec = yaml.safe_load(SHORT_RUN.read_text())
    spec["spec"]["orchestrator"]["maxSteps"] = STEPS
    spec["spec"]["trainer"]["checkpointInterval"] = 1
    spec["spec"]["retention"] = {"keepLastCheckpoints": 1, "keepBest": 1}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run_color-codeword-ci"
    ckpts = run_dir / "checkpoints"

    seen: set[int] = set()  # every checkpoint that ever became complete

    def watch() -> None:
        seen.update(int(p.parent.name.removeprefix("step_")) for p in ckpts.glob("step_*/DONE"))

    code, out = rlrun_local_watching(config, tmp_path, watch, every=0.02)
    assert code == 0, out[-4000:]

    records = [
        json.loads(line) for line in (run_dir / "orchestrator" / "metrics.jsonl").read_text().splitlines()
    ]
    for r in records:  # the per-version breakdown covers every rollout of the step
        per = r["reward_by_version"].values()
        assert sum(e["rollouts"] for e in per) == r["rollouts"]
        assert sum(e["sum"] for e in per) / r["rollouts"] == pytest.approx(r["reward_mean"])
    scores = read_version_scores(run_dir)
    assert scores.final_below == STEPS - 1 - spec["spec"]["orchestrator"]["maxAsyncSteps"]
    final = {v: s.reward_mean for v, s in scores.by_version.items() if v < scores.final_below}
    print("final scores by version:", final)
    assert seen == set(range(1, STEPS + 1)) and final
    [best] = best_checkpoints([s for s in sorted(seen) if s < scores.final_below], scores.by_version, 1)

    survivors = {int(p.name.removeprefix("step_")) for p in ckpts.glob("step_*")}
    # The trainer's last prune (after training step STEPS-1) saw steps up to STEPS-2 recorded: versions
    # from one below today's final_below on could still await their score. Every other one rotated out,
    # the best excepted.
    assert {best, STEPS} <= survivors
    assert survivors - {best} <= set(range(scores.final_below - 1, STEPS + 1)), (best, survivors)
    print("best", best, "survivors", sorted(survivors), "rotated", sorted(seen - survivors))
    report = _retention(str(run_dir), "--dry-run")
    assert [(b["step"], b["rewardMean"]) for b in report["keepBest"]] == [(best, final[best])]
    assert (
        f"the {scores.by_version[best].rollouts} rollouts policy version {best} generated"
        in report["keepBest"][0]["why"]
    )
    # the run pruned as it went; what its last prune could not yet rank, the policy now settles
    _retention(str(run_dir))
    assert {int(p.name.removeprefix("step_")) for p in ckpts.glob("step_*")} == {best} | set(
        range(scores.final_below, STEPS + 1)
    )
