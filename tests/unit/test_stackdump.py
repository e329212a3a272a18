"""Stack dumps on SIGUSR1 from real processes, and the culprit the diagnosis names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlrun.runtime import stackdump

# A process that installs the handler, says so, then blocks: in a socket read, or in a plain sleep.
CHILD = """
import socket, sys, time
from pathlib import Path
from rlrun.runtime import stackdump
stackdump.install(Path(sys.argv[1]), 0, sys.argv[2])
print("ready", flush=True)
if sys.argv[3] == "loader":
    from rlrun.runtime.transport.handoff import read_batch
    read_batch(Path(sys.argv[1]) / "rollouts", 0)  # no batch comes: the trainer master's wait
elif sys.argv[3] == "socket":
    a, b = socket.socketpair()
    a.makefile("rb").read(1)  # what http.client does: a Python frame in socket.py
else:
    time.sleep(600)
"""


@pytest.fixture
def blocked(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(name: str, where: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), name, where], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _dump_all(directory: Path, names: dict[int, str]) -> dict[str, str | None]:
    time.sleep(1.0)  # "ready" comes right before the blocking call: let every child get into it
    offsets = stackdump.sizes(directory, names)
    for pid in names:
        os.kill(pid, stackdump.DUMP_SIGNAL)
    time.sleep(1.0)
    return stackdump.read_dumps(directory, names, offsets)


def test_the_process_whose_stack_differs_is_the_suspect(tmp_path, blocked):
    for i in range(2):
        blocked(f"trainer-rank{i}", "sleep")
    odd = blocked("trainer-rank2", "socket")
    directory = stackdump.dump_dir(tmp_path, 0)
    names = stackdump.registered(directory)
    assert sorted(names.values()) == ["trainer-rank0", "trainer-rank1", "trainer-rank2"]
    dumps = _dump_all(directory, names)
    assert all(text and "most recent call first" in text for text in dumps.values()), dumps  # still alive
    diagnosis = stackdump.diagnose(dumps)
    assert diagnosis.culprit == stackdump.label("trainer-rank2", odd.pid)
    assert diagnosis.why == "waiting on a socket while the others are running"


def test_a_stopped_process_leaves_no_dump_and_is_named(tmp_path, blocked):
    live = blocked("trainer-rank0", "sleep")
    stopped = blocked("trainer-rank1", "sleep")
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        directory = stackdump.dump_dir(tmp_path, 0)
        dumps = _dump_all(directory, stackdump.registered(directory))
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    diagnosis = stackdump.diagnose(dumps)
    assert dumps[stackdump.label("trainer-rank0", live.pid)]
    assert diagnosis.culprit == stackdump.label("trainer-rank1", stopped.pid)
    assert diagnosis.categories[diagnosis.culprit] == "no dump"


def test_a_rank_waiting_for_its_batch_is_in_the_data_loader(tmp_path, blocked):
    waiting = blocked("trainer-rank0", "loader")
    blocked("trainer-rank1", "sleep")
    blocked("trainer-rank2", "sleep")
    directory = stackdump.dump_dir(tmp_path, 0)
    diagnosis = stackdump.diagnose(_dump_all(directory, stackdump.registered(directory)))
    assert diagnosis.culprit == stackdump.label("trainer-rank0", waiting.pid)
    assert diagnosis.categories[diagnosis.culprit] == "in the data loader"


def test_the_launchers_stall_dump_names_a_stopped_role_and_keeps_the_others_running(tmp_path):
    """`rlrun local`'s stall path (LocalRun.dump_stacks) over real role processes: SIGUSR1 to each, a
    report naming the stopped one, and no process killed by the signal."""
    from rlrun.runtime.config import RuntimeConfig
    from rlrun.runtime.local import LocalRun, Role

    cfg = RuntimeConfig(run_id="stall", asset_root=str(tmp_path))
    events: list[str] = []
    run = LocalRun(cfg, on_event=events.append)
    for name, where in (("trainer", "socket"), ("orchestrator", "sleep"), ("env-worker", "sleep")):
        env = {**os.environ, "RLRUN_ATTEMPT": "0"}
        argv = [sys.executable, "-c", CHILD, str(cfg.run_dir), name, where]
        role = Role(name, argv, tmp_path / f"{name}.log", env)
        role.start()
        run.roles.append(role)
    try:
        deadline = time.monotonic() + 60
        while len(stackdump.registered(stackdump.dump_dir(cfg.run_dir, 0))) < 3:
            assert time.monotonic() < deadline, "children did not install their handlers"
            time.sleep(0.1)
        time.sleep(1.0)  # into their blocking calls
        stopped = run.role("orchestrator").proc
        os.kill(stopped.pid, signal.SIGSTOP)
        report = json.loads(run.dump_stacks("test stall").read_text())
        assert report["culprit"] == stackdump.label("orchestrator", stopped.pid), report
        assert report["categories"] == {
            stackdump.label("trainer", run.role("trainer").proc.pid): "waiting on a socket",
            stackdump.label("orchestrator", stopped.pid): "no dump",
            stackdump.label("env-worker", run.role("env-worker").proc.pid): "running",
        }
        assert "stopped (SIGSTOP)" in report["why"] and "suspected culprit: orchestrator" in events[-1]
        assert all(role.proc.poll() is None for role in run.roles)  # SIGUSR1 killed no one
    finally:
        for role in run.roles:
            role.proc.kill()
            role.proc.wait()


def test_the_next_attempt_diagnoses_the_stacks_a_stopped_attempt_left(tmp_path, blocked):
    """What an operator-restarted stall leaves: each trainer process dumped on SIGTERM (the pod's log
    wrapper asks them), nobody compared them. Roles of another group that never dumped do not count."""
    blocked("trainer-rank0", "sleep")
    odd = blocked("trainer-rank1", "socket")
    blocked("trainer-rank2", "sleep")
    blocked("orchestrator", "sleep")  # registered under attempt 0 too, and not stopped: no dump
    directory = stackdump.dump_dir(tmp_path, 0)
    trainers = {pid: n for pid, n in stackdump.registered(directory).items() if n.startswith("trainer-rank")}
    assert len(trainers) == 3
    _dump_all(directory, trainers)

    found = stackdump.diagnose_stopped_attempt(tmp_path, 0)
    suspect = stackdump.label("trainer-rank1", odd.pid)
    assert found == (
        f"suspected culprit: {suspect} (waiting on a socket while the others are running); "
        f"stacks of every trainer process in {directory}/ (hang.json)"
    )
    report = json.loads((directory / stackdump.REPORT_FILE).read_text())
    assert report["culprit"] == suspect and report["reason"] == "trainer attempt 0 stopped (SIGTERM)"
    assert stackdump.diagnose_stopped_attempt(tmp_path, 0) is None  # diagnosed once


def test_an_attempt_that_left_no_dump_is_not_diagnosed(tmp_path, blocked):
    blocked("trainer-rank0", "sleep")  # registered, never asked: the attempt crashed, nobody stopped it
    assert stackdump.diagnose_stopped_attempt(tmp_path, 0) is None
    assert stackdump.diagnose_stopped_attempt(tmp_path, 7) is None  # no such attempt
    assert not (stackdump.dump_dir(tmp_path, 0) / stackdump.REPORT_FILE).exists()


def test_a_diagnosis_under_a_long_run_path_fits_the_start_up_report(tmp_path):
    """Status fields are bounded; a deep asset root must shorten the line, not fail the trainer's start."""
    from rlrun.runtime.config import STACKS_SUMMARY_MAX, TrainerStartup

    run_dir = tmp_path.joinpath(*["d" * 200] * 5)
    dumper = "import sys; from pathlib import Path; from rlrun.runtime import stackdump; "
    dumper += "stackdump.install(Path(sys.argv[1]), 0, sys.argv[2]); stackdump.dump_now('SIGTERM')"
    for rank in range(2):
        subprocess.run([sys.executable, "-c", dumper, str(run_dir), f"trainer-rank{rank}"], check=True)
    found = stackdump.diagnose_stopped_attempt(run_dir, 0)
    assert found is not None and len(found) <= STACKS_SUMMARY_MAX and found.endswith("(hang.json)"), found
    assert TrainerStartup(attempt=1, previous_attempt_stacks=found).previous_attempt_stacks == found
