"""Orchestrator RSS over a local run (target: flat, <= 1% growth) and time per step by role.

Runs the bundled example shape (tiny Qwen2-VL, colour/codeword) as local processes for STEPS steps,
sampling the orchestrator's RSS at every completed step. Baseline, measured in the same run: the RSS
after the warm-up steps (imports, first batches, allocator arenas settled); the figure is the growth from
there to the last step. Per-role time per step comes from the roles' own metrics files.

    .venv/bin/python bench/bench_local.py [--steps 24] [--warmup 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.local import LocalRun, read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlrun-bench-") as root:
        cfg = RuntimeConfig(run_id="bench", asset_root=root)
        o = cfg.orchestrator
        # examples/color-codeword.yaml's shape: 16 groups of 8, one 64-sample micro-batch per rank.
        o.group_size, o.batch_size, o.max_steps, o.learning_rate = 8, 128, args.steps, 2e-3
        cfg.trainer.processes_per_node, cfg.trainer.checkpoint_interval = 2, 10
        cfg.trainer.micro_batch_size = 64
        run = LocalRun(cfg)
        run.prepare()
        rss: dict[int, int] = {}

        def sample(progress) -> None:
            if progress.step not in rss:
                rss[progress.step] = psutil.Process(run.role("orchestrator").proc.pid).memory_info().rss

        started = time.monotonic()
        try:
            run.start_all()  # inference builds the model; the other roles start as soon as it exists
            run.wait(sample)
        finally:
            run.stop_all()
        wall = time.monotonic() - started
        report(run.run_dir, rss, args.warmup, wall)
        first = read_jsonl(run.run_dir / "orchestrator" / "metrics.jsonl")[0]
        print(f"start-up: launch -> step 0 written {first_step_seconds(run.run_dir, started, first):.1f}s")


def first_step_seconds(run_dir: Path, started: float, first: dict) -> float:
    """Seconds from launch until step 0's batch was on disk (its file's mtime, on the wall clock)."""
    batch = run_dir / "rollouts" / "step_0" / "batch.msgpack"
    launched_wall = time.time() - (time.monotonic() - started)
    return batch.stat().st_mtime - launched_wall if batch.exists() else float(first["time_step_s"])


def report(run_dir: Path, rss: dict[int, int], warmup: int, wall: float) -> None:
    steps = sorted(rss)
    base_step = min((s for s in steps if s >= warmup), default=steps[0])
    base, last = rss[base_step], rss[steps[-1]]
    growth = 100.0 * (last - base) / base
    print(f"orchestrator RSS: step {base_step} (baseline, after warm-up) {base / 2**20:.1f} MiB -> "
          f"step {steps[-1]} {last / 2**20:.1f} MiB: {growth:+.2f}% (target <= 1%)")  # fmt: skip
    print("  samples: " + " ".join(f"{s}:{rss[s] / 2**20:.1f}" for s in steps))
    orch = read_jsonl(run_dir / "orchestrator" / "metrics.jsonl")[warmup:]
    trainer = read_jsonl(run_dir / "trainer" / "metrics_rank0.jsonl")[warmup:]

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows) if rows else float("nan")

    print(f"time per step (median over steps >= {warmup}), total wall {wall:.0f}s for {len(steps)} steps:")
    print(f"  orchestrator  step {med(orch, 'time_step_s'):.3f}s = wait for policy "
          f"{med(orch, 'time_wait_policy_s'):.3f}s + generate (env-worker + inference) "
          f"{med(orch, 'time_generate_s'):.3f}s + write batch {med(orch, 'time_write_s'):.3f}s + log samples "
          f"{med(orch, 'time_log_samples_s'):.3f}s")  # fmt: skip
    print(f"  trainer       step {med(trainer, 'time_step_s'):.3f}s = wait for batch+fan-out "
          f"{med(trainer, 'time_wait_s'):.3f}s + load/materialize {med(trainer, 'time_load_s'):.3f}s + "
          f"forward/backward/step {med(trainer, 'time_train_s'):.3f}s + publish weights/checkpoint "
          f"{med(trainer, 'time_publish_s'):.3f}s")  # fmt: skip


if __name__ == "__main__":
    main()
