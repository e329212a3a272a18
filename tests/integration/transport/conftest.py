"""Runs tests/integration/transport/fanout_worker.py under a real torchrun, with MASTER_ADDR=127.0.0.2."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("fanout_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
PYCACHE = Path(tempfile.gettempdir()) / "rlrun-test-pycache"
MASTER_ADDR = "127.0.0.2"  # not the default localhost: proves nothing assumes it


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports that are bindable on all interfaces right now."""
    for _ in range(200):
        base = random.randrange(30000, 60000)
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports found in 30000-60000")


@dataclass
class Run:
    returncode: int
    output: str
    elapsed: float
    finished_at: float

    def seconds_after_fault(self) -> float:
        """From the injected fault (a rank prints "fault at <epoch>") to torchrun's exit."""
        return self.finished_at - float(re.findall(r"fault at ([\d.]+)", self.output)[0])

    def lines(self, rank: int) -> str:
        return "\n".join(line for line in self.output.splitlines() if line.startswith(f"[rank {rank}]"))


@pytest.fixture
def torchrun() -> Callable[[int, str], Run]:
    def run(nproc: int, mode: str) -> Run:
        base = free_ports(4)  # torchrun store on base; fan-out base_port base+1 -> data base+2, READY base+3
        env = os.environ | {
            # The venv has no .pyc files (PYTHONDONTWRITEBYTECODE): each rank would compile torch from source
            # (~5 s CPU). A bytecode cache outside the venv makes every later torchrun start ~2.5x cheaper.
            "PYTHONPYCACHEPREFIX": str(PYCACHE),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "FANOUT_MODE": mode,
            "FANOUT_BASE_PORT": str(base + 1),
        }
        env.pop("MASTER_ADDR", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cmd = [
            str(TORCHRUN),
            f"--nproc-per-node={nproc}",
            f"--master-addr={MASTER_ADDR}",
            f"--master-port={base}",
            "--max-restarts=0",
            "--monitor-interval=0.1",
            str(WORKER),
        ]
        started = time.monotonic()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
        finished = time.time()
        output = proc.stdout + proc.stderr
        assert re.search(r"\[rank \d\]", output), output
        return Run(proc.returncode, output, time.monotonic() - started, finished)

    return run
