"""FanOut over real ZMQ sockets and a real torch.distributed HashStore; the watchdog in a real subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
import torch.distributed as dist

from rlrun.runtime.config import TransportConfig
from rlrun.runtime.transport.failfast import (
    FanOut,
    encode_status,
    publish_status_key,
    raise_for_status,
)
from rlrun.runtime.transport.fanout import MicroBatchPublisher, MicroBatchSubscriber
from rlrun.runtime.wire import MicroBatch, ints

MakeCfg = Callable[..., TransportConfig]
MakeMb = Callable[..., MicroBatch]


def run_rank(fn: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    """Run one rank's side in a thread; its result or exception lands in the returned dict."""
    out: dict[str, object] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def test_status_round_trip() -> None:
    raise_for_status(3, encode_status(None))
    with pytest.raises(RuntimeError, match=r"failed to pack micro-batch step 3: ValueError\('boom'\)"):
        raise_for_status(3, encode_status(ValueError("boom")))


def test_steps_reach_both_ranks_even_when_packing_outlasts_the_receive_timeout(
    make_cfg: MakeCfg, make_mb: MakeMb
) -> None:
    cfg = make_cfg(receive_timeout_seconds=1)
    store = dist.HashStore()
    master = FanOut(cfg, store, 0, 2, poll_seconds=0.05)
    rank1 = FanOut(cfg, store, 1, 2, poll_seconds=0.05)
    try:
        thread, out = run_rank(lambda: [rank1.rank_step(step) for step in range(2)])

        def slow_pack(step: int) -> list[list[MicroBatch]]:
            if step == 1:
                time.sleep(1.5)  # longer than the receive timeout: waiting for the master has no deadline
            return [[make_mb(0, step)], [make_mb(1, step)]]

        got0 = [master.exchange(step, lambda step=step: slow_pack(step)) for step in range(2)]
        thread.join(timeout=10)
        assert "error" not in out, out
        assert [int(ints(b[0].input_ids)[0]) for b in got0] == [0, 1000]
        assert [int(ints(b[0].input_ids)[0]) for b in out["result"]] == [1_000_000, 1_001_000]  # type: ignore[attr-defined]
        assert store.check([publish_status_key(0), publish_status_key(1)])
    finally:
        master.close()
        rank1.close()


def test_ranks_wait_while_the_master_beats_and_fail_when_it_falls_silent(
    make_cfg: MakeCfg, make_mb: MakeMb
) -> None:
    """The master waits 3 s for its batch, beating (as `read_batch` does at every poll): step 0 arrives.
    Then it falls silent (a stopped master: its store and sockets stay up): the rank fails in ~2 s."""
    cfg = make_cfg(pack_watchdog_seconds=2)
    store = dist.HashStore()
    master = FanOut(cfg, store, 0, 2, poll_seconds=0.05)
    rank1 = FanOut(cfg, store, 1, 2, poll_seconds=0.05)
    try:
        thread, out = run_rank(lambda: rank1.rank_step(0))

        def waiting_pack() -> list[list[MicroBatch]]:
            for _ in range(30):
                master.heartbeat()
                time.sleep(0.1)
            return [[make_mb(0, 0)], [make_mb(1, 0)]]

        master.exchange(0, waiting_pack)
        thread.join(timeout=10)
        assert "error" not in out, out
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"trainer master sent no heartbeat for \d+s"):
            rank1.rank_step(1)
        assert time.monotonic() - started < 5
    finally:
        master.close()
        rank1.close()


def test_master_packing_error_reaches_every_rank(make_cfg: MakeCfg) -> None:
    cfg = make_cfg()
    store = dist.HashStore()
    master = FanOut(cfg, store, 0, 2, poll_seconds=0.05)
    rank1 = FanOut(cfg, store, 1, 2, poll_seconds=0.05)
    try:
        thread, out = run_rank(lambda: rank1.rank_step(0))

        def broken_pack() -> list[list[MicroBatch]]:
            raise KeyError("sample 17 has no completion")

        with pytest.raises(KeyError, match="sample 17"):
            master.exchange(0, broken_pack)
        thread.join(timeout=5)
        error = out["error"]
        assert isinstance(error, RuntimeError)
        assert (
            "Trainer master failed to pack micro-batch step 0: KeyError('sample 17 has no completion')"
            in str(error)
        )
    finally:
        master.close()
        rank1.close()


def test_rank_waiting_on_a_dead_master_fails_within_the_receive_timeout(
    make_cfg: MakeCfg, make_mb: MakeMb
) -> None:
    cfg = make_cfg(receive_timeout_seconds=1)
    store = dist.HashStore()
    rank1 = FanOut(cfg, store, 1, 2, poll_seconds=0.05)
    try:
        # The master's side, built from its real parts, so its sockets can vanish as when its process dies.
        with MicroBatchPublisher(cfg, 2) as publisher, MicroBatchSubscriber(cfg, 0):
            thread, out = run_rank(lambda: rank1.rank_step(0))
            publisher.publish(0, [[make_mb(0, 0)], [make_mb(1, 0)]])
            store.set(publish_status_key(0), encode_status(None))
            thread.join(timeout=5)
            assert "error" not in out, out
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="Lost the connection to the trainer master"):
            rank1.rank_step(1)  # step 1's status never comes: without the connection check this waits forever
        assert time.monotonic() - started < 3
    finally:
        rank1.close()


WATCHDOG_SCRIPT = """
import sys, time
from rlrun.runtime.transport.watchdog import PackWatchdog
dog = PackWatchdog(limit_seconds=0.5, check_every=0.05)
with dog.armed(1):
    time.sleep(0.2)          # a normal step: disarmed in time
time.sleep(1.0)              # disarmed: nothing happens
print("survived step 1", flush=True)
with dog.armed(2):
    time.sleep(30)           # wedged
print("unreachable", flush=True)
"""


def test_watchdog_kills_a_wedged_master_only() -> None:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", WATCHDOG_SCRIPT], capture_output=True, text=True, timeout=20)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert "survived step 1" in proc.stdout and "unreachable" not in proc.stdout
    assert re.search(
        r"packing micro-batch step 2 made no progress for \d+s, over transport.packWatchdogSeconds=0.5",
        proc.stderr,
    )
    assert elapsed < 10
