"""`rlrun local` end to end: every role as a real process, the tiny VLM learns colours from image refs."""

import json
import re
import time
from pathlib import Path

import msgspec
import psutil
import pytest
import yaml

from rlrun.runtime.assets import uri_to_path
from rlrun.runtime.transport.handoff import batch_path
from rlrun.runtime.wire import TrainingBatch

from .conftest import SHORT_RUN, rlrun_local

pytestmark = pytest.mark.e2e
RUN = "run_color-codeword-ci"
NUM_COLOURS = 4
_SPEC = yaml.safe_load(SHORT_RUN.read_text())["spec"]
STEPS = _SPEC["orchestrator"]["maxSteps"]
CHECKPOINT_EVERY = _SPEC["trainer"]["checkpointInterval"]
# The image-blind ceiling is 1/NUM_COLOURS. A pipeline that loses the image, the advantages or the weight
# reload stays at or below 0.25; runs reach 0.7-1.0. The best 10-step window must clear the ceiling by a
# wide margin and the last one must stay clear of it: the tiny recipe sometimes loses one colour for good
# late in a run (0.74 -> 0.49 in one step at step 80, seen once in three runs on 2026-12-01; the open
# late-instability problem in bench/RESULTS.md), which is a training-recipe limit, not a pipeline fault.
LEARNED = 0.5
KEPT = 0.4


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_local_run_learns_from_image_refs_on_two_ranks(tmp_path, no_leftover_processes):
    code, out = rlrun_local(tmp_path)
    assert code == 0, out[-4000:]
    run_dir = tmp_path / RUN
    rewards = [r["reward_mean"] for r in _jsonl(run_dir / "orchestrator" / "metrics.jsonl")]
    assert len(rewards) == STEPS
    early, late = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    best = max(sum(rewards[i : i + 10]) / 10 for i in range(len(rewards) - 9))
    assert early <= 0.35, f"reward starts at {early:.3f}, above chance: the warm-up leaks answers; {rewards}"
    assert best >= LEARNED, (
        f"reward peaks at {best:.3f}, not clear of the image-blind ceiling 0.25; {rewards}"
    )
    assert late >= KEPT, f"reward ends at {late:.3f}, back near the image-blind ceiling 0.25; curve {rewards}"
    assert (run_dir / "reward_curve.png").stat().st_size > 0 and f"done: {STEPS} steps" in out

    # Images offloaded once each: one content-addressed file per colour, every ref points at one of them.
    images = sorted((run_dir / "assets" / "images").iterdir())
    assert len(images) == NUM_COLOURS, images
    # Consumed batches are pruned: only what a resume from the oldest kept checkpoint reads is left.
    kept = sorted(int(p.name.removeprefix("step_")) for p in (run_dir / "rollouts").iterdir())
    assert kept == list(range(STEPS - CHECKPOINT_EVERY, STEPS)), kept
    uris = set()
    for step in (kept[0], STEPS - 1):
        batch = msgspec.msgpack.decode(
            batch_path(run_dir / "rollouts", step).read_bytes(), type=TrainingBatch
        )
        for sample in batch.samples:
            assert sample.mm_kwargs is None and sample.mm_refs is not None
            uris.update(sample.mm_refs.uris)
    assert {uri_to_path(u) for u in uris} <= set(images)

    # The trainer received refs, not pixels, on both ranks.
    for rank in (0, 1):
        records = _jsonl(run_dir / "trainer" / f"metrics_rank{rank}.jsonl")
        assert len(records) == STEPS and {r["world_size"] for r in records} == {2}
        assert sum(r["mm_kwargs_micro_batches"] for r in records) == 0
        assert sum(r["pixel_bytes_received"] for r in records) == 0
        assert sum(r["mm_refs_micro_batches"] for r in records) > 0


def _trainer_rank_pids(launcher: psutil.Process) -> list[psutil.Process]:
    # Roles run in their own sessions, so look them up by parent chain from the launcher.
    return [
        p for p in launcher.children(recursive=True)
        if "rlrun.runtime.trainer" in " ".join(p.cmdline()) and "torch.distributed.run" not in " ".join(p.cmdline())
    ]  # fmt: skip


def test_killing_the_trainer_stops_the_run_and_resume_continues(tmp_path, no_leftover_processes):
    proc = rlrun_local(tmp_path, wait=False)
    run_dir = tmp_path / RUN
    marker = run_dir / "checkpoints" / f"step_{CHECKPOINT_EVERY}" / "DONE"
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.5)
    ranks = _trainer_rank_pids(psutil.Process(proc.pid))
    assert len(ranks) == 2
    ranks[1].kill()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-3000:]
    assert "role trainer failed" in out

    code, out = rlrun_local(tmp_path, "--resume")
    assert code == 0, out[-4000:]
    steps = [r["step"] for r in _jsonl(run_dir / "trainer" / "metrics_rank0.jsonl")]
    assert steps[-1] == STEPS - 1 and set(steps) == set(range(STEPS))
    resumed = re.findall(
        r"rank 0 resumed from checkpoint step (\d+)",
        (run_dir / "logs" / "attempt-1" / "trainer.log").read_text(),
    )
    start = int(resumed[0]) if len(resumed) == 1 else -1
    assert start >= CHECKPOINT_EVERY and start % CHECKPOINT_EVERY == 0, resumed
    assert (run_dir / "weights" / f"step_{STEPS}" / "DONE").is_file()
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["state"] == "succeeded" and progress["step"] == STEPS and progress["attempt"] >= 1
