"""The real trainer role (`-m rlrun.runtime.trainer`) under torchrun with 2 gloo ranks, faults injected.

Each test is one torchrun of the production trainer on the built tiny model, fed by batches written with
the orchestrator's writer (`write_batch`). Faults are real: a rank stopped with SIGSTOP, a batch that is not a
TrainingBatch, a real inference server stopped with SIGSTOP while the trainer waits on its reload, and, for
the wedged pack, a FIFO at the batch path (the one fake here: it stands in for a hung volume read, which a
healthy local disk cannot produce).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.local import free_port, native_thread_limited_env
from rlrun.runtime.models.tiny import resolve_model
from rlrun.runtime.trainer.lineage import TRAINED_FILE
from rlrun.runtime.transport.handoff import batch_path, write_batch
from rlrun.runtime.wire import TrainingBatch, TrainingSample, pack_floats, pack_ints

COLLECTIVE_TIMEOUT = 5.0
WATCHDOG = 2.0
# torchrun gives its other workers 30 s after SIGTERM before SIGKILL (a stopped rank cannot act on SIGTERM).
TORCHRUN_GRACE = 30.0
TEARDOWN = 25.0  # Python and torchrun teardown on 2 busy cores


@pytest.fixture(scope="module")
def built_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    return Path(resolve_model("builtin:tiny-qwen2-vl", root))


def _batch(step: int) -> TrainingBatch:
    samples = [
        TrainingSample(pack_ints([1, 2, 3]), pack_ints([4, 5]), pack_floats([-5.0, -5.0]), (-1.0) ** i, 0.0)
        for i in range(4)
    ]
    return TrainingBatch(step, samples)


class Group:
    """One torchrun of the trainer; `stop()` kills whatever is left (the test then asserts nothing was)."""

    def __init__(self, root: Path, model: Path, max_steps: int, inference_urls: tuple[str, ...] = ()) -> None:
        cfg = RuntimeConfig(asset_root=str(root), run_id="t")
        cfg.orchestrator.group_size, cfg.orchestrator.batch_size, cfg.orchestrator.max_steps = 2, 4, max_steps
        cfg.trainer.checkpoint_interval, cfg.trainer.micro_batch_size = 100, 2
        cfg.trainer.processes_per_node = 2  # the torchrun below
        t = cfg.transport
        t.base_port, t.host, t.publish_grace_ms = free_port(3), "127.0.0.1", 50
        t.collective_timeout_seconds, t.pack_watchdog_seconds = COLLECTIVE_TIMEOUT, WATCHDOG
        t.receive_timeout_seconds = 30
        self.cfg = cfg
        cfg.run_dir.mkdir(parents=True)
        shutil.copytree(model, cfg.run_dir / "model")
        (cfg.run_dir / "config.json").write_text(cfg.to_json())
        self.log = cfg.run_dir / "trainer.log"
        env = native_thread_limited_env({**os.environ, "RLRUN_CONFIG": str(cfg.run_dir / "config.json")})
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--max-restarts", "0", "--monitor-interval", "0.1", "--master-addr", "127.0.0.1",
                "--master-port", str(free_port()), "-m", "rlrun.runtime.trainer"]  # fmt: skip
        argv += [arg for url in inference_urls for arg in ("--inference-url", url)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def rollouts(self) -> Path:
        return self.cfg.run_dir / "rollouts"

    def ranks(self) -> dict[int, psutil.Process]:
        found = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            rank = child.environ().get("RANK")
            if rank is not None:
                found[int(rank)] = child
        return found

    def wait_for_step(self, rank: int, step: int, timeout: float = 120) -> None:
        path = self.cfg.run_dir / "trainer" / f"metrics_rank{rank}.jsonl"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            if path.is_file() and any(json.loads(x)["step"] == step for x in path.read_text().splitlines()):
                return
            time.sleep(0.1)
        raise AssertionError(f"rank {rank} did not finish step {step} in {timeout}s\n{self.output()[-6000:]}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the group still runs after {timeout}s\n{self.output()[-6000:]}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def survivors(self) -> list[str]:
        mine = str(self.cfg.run_dir)
        left = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if p.environ().get("RLRUN_CONFIG", "").startswith(mine):
                    left.append(f"{p.pid} {p.status()}: {' '.join(p.cmdline())[:120]}")
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return left

    def stop(self) -> None:
        for p in [psutil.Process(self.proc.pid), *self.ranks().values()] if self.proc.poll() is None else []:
            p.kill()
        self.proc.wait(10)


@pytest.fixture
def group(tmp_path: Path, built_model: Path) -> Iterator[callable]:
    started: list[Group] = []

    def start(max_steps: int, inference_urls: tuple[str, ...] = ()) -> Group:
        started.append(Group(tmp_path, built_model, max_steps, inference_urls))
        return started[-1]

    yield start
    for g in started:
        left = g.survivors()
        g.stop()
        for p in psutil.process_iter():  # a stopped rank left behind would never go away by itself
            try:
                if p.environ().get("RLRUN_CONFIG", "").startswith(str(g.cfg.run_dir)):
                    p.kill()
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        assert not left, "processes of the group survived:\n" + "\n".join(left)


def test_a_stopped_data_rank_fails_the_group_within_the_collective_timeout(group) -> None:
    g = group(max_steps=3)
    write_batch(g.rollouts, _batch(0))
    g.wait_for_step(1, 0)
    g.ranks()[1].suspend()  # SIGSTOP: alive, holding its sockets, answering nothing
    stopped = time.monotonic()
    write_batch(g.rollouts, _batch(1))
    code = g.wait(COLLECTIVE_TIMEOUT + TORCHRUN_GRACE + TEARDOWN)
    assert code != 0, g.output()[-6000:]
    assert time.monotonic() - stopped < COLLECTIVE_TIMEOUT + TORCHRUN_GRACE + TEARDOWN
    assert "Timed out" in g.output() or "timed out" in g.output(), g.output()[-6000:]
    assert not g.survivors()


def test_the_watchdog_spares_a_waiting_master_and_kills_a_wedged_one(group) -> None:
    g = group(max_steps=4)
    write_batch(g.rollouts, _batch(0))
    g.wait_for_step(0, 0)  # the master now waits for batch 1
    time.sleep(3 * WATCHDOG)  # the orchestrator is slow: the master waits past the watchdog's limit
    write_batch(g.rollouts, _batch(1))
    g.wait_for_step(0, 1)
    g.wait_for_step(1, 1)
    fifo = batch_path(g.rollouts, 2)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # the fake: reading it blocks forever, as a hung volume read does
    wedged = time.monotonic()
    code = g.wait(WATCHDOG + TORCHRUN_GRACE + TEARDOWN)
    assert code != 0, g.output()[-6000:]
    assert "Trainer master wedged: packing micro-batch step 2 made no progress" in g.output()
    assert (
        time.monotonic() - wedged < WATCHDOG + TEARDOWN
    )  # no stopped rank: torchrun's SIGTERM works at once
    assert not g.survivors()


def test_a_failing_rank_fails_the_group_in_the_real_trainer_step(group) -> None:
    g = group(max_steps=3)
    write_batch(g.rollouts, _batch(0))
    g.wait_for_step(1, 0)
    broken = batch_path(g.rollouts, 1)
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x93not a training batch")  # the master fails to pack step 1
    failed = time.monotonic()
    code = g.wait(TEARDOWN)
    assert code != 0, g.output()[-6000:]
    out = g.output()
    assert "[rank0]: ValueError: Training batch" in out and "is not a valid TrainingBatch" in out, out[-6000:]
    assert "[rank1]: RuntimeError: Trainer master failed to pack micro-batch step 1" in out, out[-6000:]
    for rank in (0, 1):  # neither rank trained on step 1
        metrics = (g.cfg.run_dir / "trainer" / f"metrics_rank{rank}.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in metrics] == [0]
    assert time.monotonic() - failed < TEARDOWN
    assert not g.survivors()


def test_sigterm_while_a_stopped_replica_holds_the_reload_still_checkpoints_in_the_grace_window(
    group,
) -> None:
    """Suspend, budget stop and drain stop inference with the trainer: a replica that is stopping may never
    answer the reload the trainer is waiting on (on a node, a pod whose address is already gone; here a
    real inference server frozen with SIGSTOP, whose socket still accepts). The wait is
    weightSyncTimeoutSeconds (300 s) long; SIGTERM must cut it short, so the step just trained is
    checkpointed inside the grace window instead of the ranks being SIGKILLed with it unsaved."""
    port = free_port()
    g = group(max_steps=3, inference_urls=(f"http://127.0.0.1:{port}",))
    ready = g.cfg.run_dir / "inference.ready"
    argv = [sys.executable, "-m", "rlrun.runtime.inference", "--config", str(g.cfg.run_dir / "config.json"),
            "--host", "127.0.0.1", "--port", str(port), "--ready-file", str(ready)]  # fmt: skip
    with (g.cfg.run_dir / "inference.log").open("wb") as log:
        server = subprocess.Popen(
            argv, env=native_thread_limited_env(dict(os.environ)), stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert server.poll() is None and time.monotonic() < deadline, "the inference server did not start"
            time.sleep(0.1)
        server.send_signal(signal.SIGSTOP)  # alive, its socket accepting, answering nothing
        write_batch(g.rollouts, _batch(0))
        trained = g.cfg.run_dir / "trainer" / TRAINED_FILE
        deadline = time.monotonic() + 120
        while '"step": 0' not in (trained.read_text() if trained.exists() else ""):
            assert g.proc.poll() is None and time.monotonic() < deadline, g.output()[-6000:]
            time.sleep(0.1)
        time.sleep(2.0)
        assert not (g.cfg.run_dir / "trainer" / "metrics_rank0.jsonl").exists()  # still waiting on the reload
        g.proc.send_signal(signal.SIGTERM)  # what the kubelet sends torchrun, the trainer container's command
        stopped = time.monotonic()
        g.wait(TORCHRUN_GRACE + TEARDOWN)
        assert time.monotonic() - stopped < TEARDOWN, g.output()[-6000:]  # not torchrun's SIGKILL at 30 s
        out = g.output()
        assert (g.cfg.run_dir / "checkpoints" / "step_1" / "DONE").is_file(), out[-6000:]
        assert "abandoned on SIGTERM" in out and "the resumed run starts at step 1" in out, out[-6000:]
        assert not g.survivors()
    finally:
        server.kill()
        server.wait(10)
