import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).parent
SHORT_RUN = HERE / "color-codeword-short.yaml"


def rlrun_local(output_dir: Path, *extra: str, wait: bool = True, timeout: float = 420):
    """`rlrun local` as a real subprocess; `wait=False` returns the Popen so a test can act mid-run."""
    return rlrun_local_file(SHORT_RUN, output_dir, *extra, wait=wait, timeout=timeout)


def rlrun_local_file(file: Path, output_dir: Path, *extra: str, wait: bool = True, timeout: float = 420):
    """`rlrun local FILE` as a real subprocess (see `rlrun_local`)."""
    # The console script, not `-m rlrun.cli`: as __main__ the CLI module would be a second copy, not the
    # one the subcommands register with.
    argv = [
        str(Path(sys.executable).with_name("rlrun")),
        "local",
        str(file),
        "--output-dir",
        str(output_dir),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if not wait:
        return proc
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            proc.communicate(timeout=60)
    return proc.returncode, out


@pytest.fixture
def no_leftover_processes(tmp_path):
    """Fails the test if a process of this test's run (launcher, roles, torchrun ranks) is still alive.

    Every role gets RLRUN_CONFIG under the run's output dir and the launcher has it on its command line,
    so other people's processes on a shared machine never count.
    """
    yield
    mine = str(tmp_path)
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if mine in cmd or p.environ().get("RLRUN_CONFIG", "").startswith(mine):
                left.append(f"{p.info['pid']}: {cmd[:160]}")
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    assert not left, "processes left behind:\n" + "\n".join(left)
