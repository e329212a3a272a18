"""Real vLLM (the CPU build) as a test peer: where its virtualenv is, and starting/stopping a server.

The virtualenv is built by `tools/vllm/build.sh` (`make tools` runs it), so CI always has it; a checkout
without it skips the vLLM tests with a reason that says how to build it, never silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "tools" / "vllm" / "build.sh"
# Python imports plus engine start-up on 2 loaded cores: 2-5 minutes measured, so a generous bound.
START_TIMEOUT_S = 900.0


def vllm_python() -> Path | None:
    """The interpreter that runs vLLM with this checkout's rlrun ($RLRUN_VLLM_PYTHON overrides)."""
    path = Path(os.environ.get("RLRUN_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")
    return path if path.is_file() else None


def require_vllm() -> Path:
    python = vllm_python()
    if python is None:
        pytest.skip(f"the vLLM virtualenv is missing: build it with {BUILD.relative_to(REPO)} (make tools)")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env(**extra: str) -> dict[str, str]:
    """The environment of an engine under test: no hub, one thread per role (2 shared cores)."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # vLLM's engine processes talk over the host's first address unless told otherwise: keep it on
        # loopback (tests send nothing beyond 127.0.0.0/8).
        "VLLM_HOST_IP": "127.0.0.1",
        **extra,
    }


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    log: Path
    metrics_url: str = ""  # /metrics where $RLRUN_METRICS_PORT put it, when the test set one

    def stop(self) -> None:
        """SIGTERM to the server's process group (vLLM forks its engine core), SIGKILL after 60 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group's stragglers, if any
        self.proc.wait(timeout=30)


def start(name: str, argv: list[str], workdir: Path, env: dict[str, str], timeout: float) -> Server:
    """Start a server (`--ready-file` appended) in its own process group and wait until it is ready.

    The working directory is `workdir`, never the repo root: `python -m` puts the cwd on sys.path, and the
    repo's `operator/` folder would shadow the standard library module there."""
    ready = workdir / f"{name}.ready.json"
    log = workdir / f"{name}.log"
    ready.unlink(missing_ok=True)
    split = argv.index("--") if "--" in argv else len(argv)  # rlrun's options go before the engine's
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv[:split], "--ready-file", str(ready), *argv[split:]],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, "", proc, log)
    deadline = time.monotonic() + timeout
    try:
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-4000:]
                pytest.fail(
                    f"{name} did not become ready within {timeout:.0f} s (exit {proc.poll()}):\n{tail}"
                )
            time.sleep(0.5)
        server.url = json.loads(ready.read_text())["url"]
        assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    except BaseException:  # a failure, a test timeout or Ctrl-C while waiting: leave no server behind
        server.stop()
        raise
    return server
