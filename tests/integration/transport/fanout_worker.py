"""One trainer rank for the fan-out integration tests, run under torchrun (gloo, CPU).

    OMP_NUM_THREADS=1 FANOUT_BASE_PORT=<free> FANOUT_MODE=ok \
        .venv/bin/torchrun --nproc-per-node 2 --master-addr 127.0.0.2 --master-port <free> \
        tests/integration/transport/fanout_worker.py

Each step does what the trainer does: exchange micro-batches (rank 0 packs and publishes), fail together,
"materialize", fail together, then a collective standing in for the forward. Modes inject one fault:
  ok                 3 steps, every rank checks it got its own rows for the right step
  pack_error         the master raises while packing step 1
  materialize_error  the last rank raises while materializing step 1
  master_killed      the master SIGKILLs itself while packing step 1
Every line a rank prints starts with "[rank <r>]", failures included, so the test can check each rank.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback

import numpy as np
import torch
import torch.distributed as dist

from rlrun.runtime.config import TransportConfig
from rlrun.runtime.transport.failfast import FanOut, fail_together
from rlrun.runtime.wire import MicroBatch, ints

STEPS = 3
FAULT_STEP = 1
PACK_ERROR = "orchestrator batch 1 is corrupt: sample 3 has no completion tokens"
MATERIALIZE_ERROR = "image file:///data/outputs/run_t/assets/images/0123abcd.png is missing"


def micro_batch(rank: int, step: int) -> MicroBatch:
    ids = np.full((2, 8), rank * 1000 + step, dtype=np.int32)
    ones = np.ones((2, 8), np.uint8).tobytes()
    zeros = np.zeros((2, 8), np.float32).tobytes()
    return MicroBatch(2, 8, ids.tobytes(), ones, ones, zeros, zeros, 2)


def pack(mode: str, step: int, world: int) -> list[list[MicroBatch]]:
    if step == FAULT_STEP and mode == "pack_error":
        say(0, f"fault at {time.time():.3f}")
        raise ValueError(PACK_ERROR)
    if step == FAULT_STEP and mode == "master_killed":
        say(0, f"fault at {time.time():.3f}")
        os.kill(os.getpid(), signal.SIGKILL)
    return [[micro_batch(rank, step)] for rank in range(world)]


def materialize(mode: str, rank: int, world: int, step: int, batches: list[MicroBatch]) -> torch.Tensor:
    if step == FAULT_STEP and mode == "materialize_error" and rank == world - 1:
        say(rank, f"fault at {time.time():.3f}")
        raise FileNotFoundError(MATERIALIZE_ERROR)
    ids = torch.from_numpy(np.concatenate([ints(mb.input_ids) for mb in batches]).copy())
    if not bool((ids == rank * 1000 + step).all()):
        raise AssertionError(f"rank {rank} step {step} got foreign rows {ids.tolist()}")
    return ids


def say(rank: object, text: str) -> None:
    """One write per line: ranks share torchrun's pipe, and print() writes text and newline separately."""
    sys.stdout.write(f"[rank {rank}] {text}\n")
    sys.stdout.flush()


def run_step(fanout: FanOut, mode: str, rank: int, world: int, step: int) -> None:
    exchange = lambda: fanout.exchange(step, lambda: pack(mode, step, world))  # noqa: E731
    batches = fail_together("Training-batch wait failed", exchange)
    ids = fail_together("Training-batch load failed", lambda: materialize(mode, rank, world, step, batches))
    say(rank, f"forward step {step}")
    dist.all_reduce(ids.sum().reshape(1))  # the forward's first collective


def main() -> None:
    torch.set_num_threads(1)
    mode = os.environ["FANOUT_MODE"]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = TransportConfig(
        base_port=int(os.environ["FANOUT_BASE_PORT"]),
        ready_timeout_seconds=20,
        receive_timeout_seconds=3,
        publish_grace_ms=100,
        pack_watchdog_seconds=30,
    )
    store = dist.distributed_c10d._get_default_store()
    fanout = FanOut(cfg, store, rank, world, poll_seconds=0.1)
    try:
        for step in range(STEPS):
            run_step(fanout, mode, rank, world, step)
        say(rank, f"done via {fanout.endpoint}")
    finally:
        fanout.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        for line in traceback.format_exc().splitlines():
            say(os.environ.get("RANK", "?"), line)
        sys.exit(1)
