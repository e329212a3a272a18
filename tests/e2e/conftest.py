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
    """`rlrun local` as a real subprocess (its own session, so a test can signal the whole launcher)."""
    argv = [
        sys.executable,
        "-m",
        "rlrun.cli",
        "local",
        str(SHORT_RUN),
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
def no_leftover_processes():
    """Fails the test if any process started during it (launcher, roles, torchrun ranks) is still alive."""
    before = {p.pid for p in psutil.process_iter()}
    yield
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["pid"] not in before and "rlrun" in cmd and p.info["pid"] != os.getpid():
            left.append(f"{p.info['pid']}: {cmd[:160]}")
    assert not left, "processes left behind:\n" + "\n".join(left)
