"""The pod log wrapper (runtime/podlog.py) as the kubelet runs it: the installed `rlrun-podlog` console
script around a real child process, signalled as a pod is, its file read back with the production reader
(`rlrun-podlog read`, what a reader pod runs for `rlrun logs --attempt`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlrun import pod_contract
from rlrun.runtime import podlog
from rlrun.runtime.config import LogsConfig, RuntimeConfig

WRAPPER = str(Path(sys.executable).with_name("rlrun-podlog"))
POD = "demo-trainer-0-x7k2q"
ATTEMPT = 2

# A role: output on both streams, a helper process in a session of its own (left behind when the role
# exits), a stack dump on SIGUSR1 and a "checkpoint" on SIGTERM before it exits 143 as the trainer does.
ROLE = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    helper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    def term(*_):
        print("SIGTERM: checkpointing", flush=True)
        time.sleep(0.3)
        print("checkpoint saved", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, term)
    # one write: the wrapper's SIGTERM follows at once and its handler could land between print's text and
    # its newline (seen under load: "SIGUSR1: stacks dumpedSIGTERM: ...")
    signal.signal(signal.SIGUSR1, lambda *_: os.write(1, b"SIGUSR1: stacks dumped\\n"))
    print("to stderr", file=sys.stderr, flush=True)
    print(f"ready helper={helper.pid}", flush=True)
    while True:
        time.sleep(0.05)
    """
)


def _env(tmp_path: Path, logs: LogsConfig | None = None, asset_root: Path | None = None) -> dict[str, str]:
    cfg = RuntimeConfig(
        run_id="demo", asset_root=str(asset_root or tmp_path / "outputs"), logs=logs or LogsConfig()
    )
    (tmp_path / "config.json").write_text(cfg.to_json())
    return {
        **os.environ,
        "RLRUN_CONFIG": str(tmp_path / "config.json"),
        "RLRUN_COMPONENT": "trainer",
        "RLRUN_POD_NAME": POD,
        "RLRUN_ATTEMPT": str(ATTEMPT),
    }


def _run_dir(tmp_path: Path) -> Path:
    return RuntimeConfig.load(tmp_path / "config.json", environ={}).run_dir


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_role_is_signalled_through_it_exits_with_its_code_and_its_log_outlives_it(tmp_path):
    env = _env(tmp_path)
    wrapper = subprocess.Popen(
        [WRAPPER, "--", sys.executable, "-c", ROLE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert wrapper.stdout is not None
        line = wrapper.stdout.readline().decode()  # the console copy: what `kubectl logs` shows
        assert line.startswith("ready helper="), line
        helper = int(line.split("=")[1])
        wrapper.send_signal(signal.SIGUSR1)
        assert wrapper.stdout.readline() == b"SIGUSR1: stacks dumped\n"
        wrapper.send_signal(signal.SIGTERM)  # what the kubelet sends PID 1 on deletion or preemption
        out, err = wrapper.communicate(timeout=podlog.LEFTOVER_GRACE_SECONDS + 30)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
    assert wrapper.returncode == 143
    # SIGTERM asks for the stacks first (a pod stopped while hung keeps them), then reaches the role
    assert (
        out == b"SIGUSR1: stacks dumped\nSIGTERM: checkpointing\ncheckpoint saved\n" and err == b"to stderr\n"
    )
    assert not _alive(helper), "the helper the role left behind survived it"

    log = podlog.log_path(_run_dir(tmp_path), ATTEMPT, "trainer", POD)
    assert log == _run_dir(tmp_path) / "logs" / f"attempt-{ATTEMPT}" / f"trainer-{POD}.log"
    text = log.read_text()
    for expected in ("to stderr", "ready helper=", "SIGUSR1: stacks dumped", "checkpoint saved"):
        assert expected in text
    # the production reader, as a reader pod runs it (the config from the same env)
    read = subprocess.run(
        [WRAPPER, "read", "--component", "trainer", "--attempt", str(ATTEMPT)],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert read.stdout.decode() == f"{pod_contract.LOG_ATTEMPT_MARK} {ATTEMPT}\n{text}"
    newest = subprocess.run(
        [WRAPPER, "read", "--component", "trainer"], env=env, capture_output=True, timeout=60
    )
    assert newest.stdout == read.stdout  # no --attempt: the newest attempt with a trainer log
    missing = subprocess.run(
        [WRAPPER, "read", "--component", "trainer", "--attempt", "1"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode == pod_contract.NO_LOGS_EXIT
    assert (
        missing.stderr.decode().startswith(pod_contract.NO_LOGS_MARK)
        and f"[{ATTEMPT}]" in missing.stderr.decode()
    )


def test_a_role_killed_by_a_signal_exits_as_a_shell_reports_it(tmp_path):
    code = "import os, signal; print('bye', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    proc = subprocess.run(
        [WRAPPER, "--", sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, timeout=60
    )
    assert proc.returncode == 128 + signal.SIGKILL and proc.stdout == b"bye\n"
    assert podlog.read_logs(_run_dir(tmp_path), "trainer")[1][0].read_text() == "bye\n"


def test_the_log_is_rotated_and_size_bounded(tmp_path):
    logs = LogsConfig(max_bytes=4096, backups=2)
    code = "import sys\nfor i in range(2000): print(f'line {i:05d} ' + 'x' * 40, flush=True)\n"
    proc = subprocess.run(
        [WRAPPER, "--", sys.executable, "-c", code], env=_env(tmp_path, logs), capture_output=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.count(b"\n") == 2000  # the console has everything
    log = podlog.log_path(_run_dir(tmp_path), ATTEMPT, "trainer", POD)
    parts = sorted(log.parent.iterdir())
    assert [p.name for p in parts] == [log.name, f"{log.name}.1", f"{log.name}.2"]
    assert all(p.stat().st_size <= logs.max_bytes + podlog.READ_BYTES for p in parts)  # + one read
    assert (
        log.read_text().rstrip().endswith("line 01999 " + "x" * 40)
    )  # the newest lines are in the live file


def test_an_unwritable_volume_costs_the_file_not_the_role(tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")  # the asset root is a file: no run directory can be made under it
    proc = subprocess.run(
        [WRAPPER, "--", sys.executable, "-c", "print('still runs')"],
        env=_env(tmp_path, asset_root=blocked), capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == b"still runs\n"
    assert b"rlrun-podlog: no log on the run volume (console only)" in proc.stderr


@pytest.mark.parametrize("argv", [[], ["python"], ["read"]])
def test_bad_usage_is_refused_at_once(argv):
    proc = subprocess.run([WRAPPER, *argv], capture_output=True, timeout=60)
    assert proc.returncode == 2 or b"usage" in proc.stderr, proc
    assert proc.returncode != 0


# torchrun's shape: a launcher that does not handle SIGUSR1 (it would die of it) and passes SIGTERM on to
# its rank; the rank registers its stack dump (the production stackdump.install_role) and hangs.
RANK = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from rlrun.runtime import stackdump
    stackdump.install_role(Path(sys.argv[1]), "trainer-rank0")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    def stuck_in_collective():
        print("rank ready", flush=True)
        while True:
            time.sleep(0.05)
    stuck_in_collective()
    """
)
LAUNCHER = textwrap.dedent(
    """
    import signal, subprocess, sys
    rank = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
    signal.signal(signal.SIGTERM, lambda *_: rank.send_signal(signal.SIGTERM))
    sys.exit(rank.wait())
    """
)


def test_sigusr1_and_sigterm_dump_every_rank_but_spare_a_launcher_that_would_die_of_it(tmp_path):
    env = _env(tmp_path)
    run_dir = _run_dir(tmp_path)
    argv = [WRAPPER, "--", sys.executable, "-c", LAUNCHER, RANK, str(run_dir)]
    wrapper = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dumps = run_dir / "forensics" / f"attempt-{ATTEMPT}"
    try:
        assert wrapper.stdout is not None and wrapper.stdout.readline() == b"rank ready\n"
        (stacks,) = dumps.glob("trainer-rank0-*.stacks")
        wrapper.send_signal(signal.SIGUSR1)  # `kill -USR1 1` in the pod
        deadline = time.monotonic() + 30
        while "stuck_in_collective" not in stacks.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "stuck_in_collective" in stacks.read_text()
        assert wrapper.poll() is None, "the launcher died of SIGUSR1"
        first = stacks.stat().st_size
        wrapper.send_signal(
            signal.SIGTERM
        )  # the pod deleted while hung: the stacks of that moment, then exit
        wrapper.communicate(timeout=podlog.LEFTOVER_GRACE_SECONDS + 30)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
    assert wrapper.returncode == 143
    assert stacks.stat().st_size > first and stacks.read_text().count("stuck_in_collective") == 2


@pytest.mark.parametrize("plant", ["symlink", "fifo"])
def test_a_planted_symlink_or_fifo_at_the_log_path_is_refused(tmp_path, plant):
    env = _env(tmp_path)
    log = podlog.log_path(_run_dir(tmp_path), ATTEMPT, "trainer", POD)
    log.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    if plant == "symlink":
        log.symlink_to(victim)  # would redirect the role's output over another file
    else:
        os.mkfifo(log)  # would block the wrapper's open (no reader) before the role starts
    proc = subprocess.run(
        [WRAPPER, "--", sys.executable, "-c", "print('runs')"], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == b"runs\n"
    assert b"no log on the run volume (console only)" in proc.stderr
    assert victim.read_text() == "keep\n"
