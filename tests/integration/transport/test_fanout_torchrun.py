"""The fan-out with real torchrun ranks (gloo, CPU), MASTER_ADDR=127.0.0.2: delivery and failing together.

Each torchrun costs a few seconds of torch imports per rank on 2 cores, so every fault runs once (3 ranks
where bystanders matter, 2 for the master kill) and only delivery runs at both 2 and 3 ranks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

Torchrun = Callable[[int, str], Any]  # -> conftest.Run
# From the fault to torchrun's exit: Python and torchrun teardown take seconds on 2 busy cores; a hang would
# last until the 90 s subprocess timeout (the publish-status wait has no deadline; gloo's is 30 min).
FAIL_FAST_SECONDS = 10
PACK_ERROR = "orchestrator batch 1 is corrupt: sample 3 has no completion tokens"
MATERIALIZE_ERROR = "image file:///data/outputs/run_t/assets/images/0123abcd.png is missing"


@pytest.mark.parametrize("nproc", [2, 3])
def test_steps_arrive_in_order_on_every_rank(torchrun: Torchrun, nproc: int) -> None:
    run = torchrun(nproc, "ok")
    assert run.returncode == 0, run.output
    for rank in range(nproc):
        lines = run.lines(rank)
        assert re.findall(r"forward step (\d)", lines) == ["0", "1", "2"], run.output
        assert "done via tcp://127.0.0.2:" in lines, run.output
    assert run.elapsed < 60


def test_master_packing_error_fails_every_rank_with_it(torchrun: Torchrun) -> None:
    nproc = 3
    run = torchrun(nproc, "pack_error")
    assert run.returncode != 0
    for rank in range(nproc):
        lines = run.lines(rank)
        assert PACK_ERROR in lines, run.output
        assert "forward step 1" not in lines, run.output
    assert "Trainer master failed to pack micro-batch step 1" in run.lines(nproc - 1), run.output
    assert run.seconds_after_fault() < FAIL_FAST_SECONDS, run.output


def test_one_rank_failing_to_materialize_stops_all_before_the_forward(torchrun: Torchrun) -> None:
    nproc = 3
    run = torchrun(nproc, "materialize_error")
    assert run.returncode != 0
    for rank in range(nproc):
        lines = run.lines(rank)
        assert "forward step 0" in lines and "forward step 1" not in lines, run.output
        assert MATERIALIZE_ERROR in lines, run.output
        where = "this rank" if rank == nproc - 1 else "another rank"
        assert f"Training-batch load failed on {where}; failing all ranks." in lines, run.output
    assert run.seconds_after_fault() < FAIL_FAST_SECONDS, run.output


def test_ranks_fail_within_the_receive_timeout_when_the_master_is_killed(torchrun: Torchrun) -> None:
    run = torchrun(2, "master_killed")
    assert run.returncode != 0
    assert run.seconds_after_fault() < 3 + FAIL_FAST_SECONDS, run.output  # receive timeout 3 s + teardown
    assert "forward step 1" not in run.lines(1), run.output
