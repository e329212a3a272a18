"""The retention planner over a tree written by the real producers (checkpoint saver, weight export,
batch hand-off): what it lists, what it never touches, and that applying it frees what it reported."""

from __future__ import annotations

import json

import torch

from rlrun.runtime.config import RetentionConfig
from rlrun.runtime.orchestrator.samples import rewards_by_version
from rlrun.runtime.retention import Score, apply, best_checkpoints, decide, plan, read_version_scores
from rlrun.runtime.trainer.checkpoint import save_checkpoint
from rlrun.runtime.trainer.weights import export_weights
from rlrun.runtime.transport.handoff import write_batch
from rlrun.runtime.wire import TrainingBatch


def _tree(run_dir):
    for step in range(8):
        write_batch(run_dir / "rollouts", TrainingBatch(step=step, samples=[]))
        export_weights(run_dir / "weights", step + 1, {"w": torch.full((64,), float(step))}, keep=100)
    for step in (2, 4, 6):
        save_checkpoint(run_dir / "checkpoints", step, {"w": torch.zeros(16)})
    (run_dir / "checkpoints" / "step_8").mkdir()  # being written: no DONE yet
    (run_dir / "checkpoints" / ".step_8.tmp-1").mkdir()


def _names(deletions):
    return sorted(f"{d.path.parent.name}/{d.path.name}" for d in deletions)


def test_plan_keeps_the_newest_and_what_a_resume_reads(tmp_path):
    _tree(tmp_path)
    policy = RetentionConfig(keep_last_checkpoints=2, weights_keep_last=2, rollouts_max_age_steps=0)
    assert _names(plan(tmp_path, policy)) == sorted(
        ["checkpoints/step_2"]
        + [f"weights/step_{v}" for v in range(1, 7)]
        + [f"rollouts/step_{s}" for s in range(4)]  # a resume from step_4 reads batches 4 on
    )


def test_rollouts_max_age_keeps_more_batches_never_fewer(tmp_path):
    _tree(tmp_path)
    policy = RetentionConfig(keep_last_checkpoints=2, rollouts_max_age_steps=4)
    rollouts = [n for n in _names(plan(tmp_path, policy)) if n.startswith("rollouts/")]
    assert rollouts == ["rollouts/step_0", "rollouts/step_1"]  # kept from step 6 - 4 = 2 on


def test_apply_frees_what_the_plan_reported_and_spares_items_being_written(tmp_path):
    _tree(tmp_path)
    deletions = plan(tmp_path, RetentionConfig(keep_last_checkpoints=1, weights_keep_last=1))
    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert apply(deletions) == sum(d.bytes for d in deletions) > 0
    assert size - sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) == sum(
        d.bytes for d in deletions
    )
    assert (tmp_path / "checkpoints" / "step_8").is_dir() and (
        tmp_path / "checkpoints" / ".step_8.tmp-1"
    ).is_dir()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_6", "step_8"]
    assert plan(tmp_path, RetentionConfig(keep_last_checkpoints=1, weights_keep_last=1)) == []


def _metrics(run_dir, steps, lag=1):
    """metrics.jsonl records as the orchestrator writes them: `steps` maps step -> [(version, reward)]."""
    path = run_dir / "orchestrator" / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for step, rollouts in steps.items():
            rows = [{"policy_version": v, "reward": r} for v, r in rollouts]
            record = {
                "step": step,
                "reward_by_version": rewards_by_version(rows),
                "min_policy_version": step - lag,
            }
            f.write(json.dumps(record) + "\n")


def test_a_checkpoint_is_scored_by_the_rollouts_its_own_version_generated(tmp_path):
    # step 3's batch mixes versions 2 and 3 (maxAsyncSteps lag); only version-2 rollouts score step_2
    _metrics(tmp_path, {2: [(1, 0.0), (2, 1.0)], 3: [(2, 0.5), (3, 0.0)], 4: [(4, 0.25), (4, 0.75)]})
    _metrics(tmp_path, {4: [(3, 1.0), (4, 0.0)]})  # step 4 re-run after a resume: its last record wins
    scores = read_version_scores(tmp_path)
    assert scores.final_below == 3  # step 4 samples versions >= 3 only
    assert {v: (s.reward_mean, s.rollouts) for v, s in scores.by_version.items()} == {
        1: (0.0, 1),
        2: (0.75, 2),
        3: (0.5, 2),
        4: (0.0, 1),
    }


def test_best_checkpoints_ignore_unscored_ones_and_break_ties_to_the_newer():
    scores = {2: Score(0.5, 4), 4: Score(0.9, 4), 6: Score(0.5, 4)}
    assert best_checkpoints([2, 4, 6, 8], scores, 1) == [4]
    assert best_checkpoints([2, 4, 6, 8], scores, 2) == [4, 6]  # 2 and 6 tie: the newer wins
    assert best_checkpoints([2, 4, 6, 8], scores, 10) == [2, 4, 6]  # step_8 has no score: never "best"
    assert best_checkpoints([2, 4, 6], scores, 0) == []


def test_keep_best_spares_the_best_checkpoint_but_not_the_batches_behind_it(tmp_path):
    _tree(tmp_path)
    # version 2 generated the best rollouts; 4 and 6 did worse
    _metrics(tmp_path, {s: [(s - 1, 1.0 if s - 1 == 2 else 0.25)] * 2 for s in range(1, 8)})
    with (tmp_path / "orchestrator" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 8, "reward_by')  # an append in progress
    policy = RetentionConfig(keep_last_checkpoints=1, keep_best=1, weights_keep_last=8)
    decided = decide(tmp_path, policy)
    assert _names(decided.delete) == sorted(
        ["checkpoints/step_4"] + [f"rollouts/step_{s}" for s in range(6)]  # resume reads step_6 on
    )
    assert [(k.step, k.score.reward_mean) for k in decided.best] == [(2, 1.0)]
    assert "reward mean 1.0000 over the 2 rollouts policy version 2 generated" in decided.best[0].why
    apply(decided.delete)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_2", "step_6", "step_8"]
    # without keepBest, the same tree loses it
    assert "checkpoints/step_2" in _names(plan(tmp_path, RetentionConfig(keep_last_checkpoints=1)))


def test_a_checkpoint_is_kept_until_its_score_is_final(tmp_path):
    _tree(tmp_path)
    # recorded steps 1..4 with lag 1: versions below 3 are final; step_4 may still get rollouts
    _metrics(tmp_path, {s: [(s - 1, 0.5)] * 2 for s in range(1, 5)})
    policy = RetentionConfig(keep_last_checkpoints=1, keep_best=1, weights_keep_last=8)
    decided = decide(tmp_path, policy)
    assert [n for n in _names(decided.delete) if n.startswith("checkpoints/")] == []
    assert [k.step for k in decided.best] == [2] and decided.awaiting_score == [4]
    _metrics(tmp_path, {5: [(4, 0.0)] * 2, 6: [(5, 0.0)] * 2})  # version 4 now final, and worse
    decided = decide(tmp_path, policy)
    assert [n for n in _names(decided.delete) if n.startswith("checkpoints/")] == ["checkpoints/step_4"]
