"""A real MLflow tracking server as a test peer (SQLite backend, artifacts on disk, on loopback).

The server comes from its own virtualenv, built by `tools/mlflow/build.sh` (`make tools` runs it); a
checkout without it skips the MLflow tests with a reason that says how to build it, never silently.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "tools" / "mlflow" / "build.sh"
START_TIMEOUT_S = 300.0  # 15-75 s measured on 2 busy cores


def mlflow_command() -> Path:
    """$RLRUN_MLFLOW, else what tools/mlflow/build.sh built; skips the test when neither exists."""
    version = BUILD.read_text().split("MLFLOW_VERSION=", 1)[1].split()[0]
    default = Path.home() / ".cache" / "rlrun" / "mlflow" / version / "bin" / "mlflow"
    path = Path(os.environ.get("RLRUN_MLFLOW") or default)
    if not path.is_file():
        pytest.skip(f"no MLflow server at {path}: build it with {BUILD.relative_to(REPO)} (make tools)")
    return path


@contextlib.contextmanager
def mlflow_server(workdir: Path, port: int) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1:`port` until the block ends; yields its URL. Its whole process group
    is killed at the end (it starts workers)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # fmt: skip
    argv = [
        str(mlflow_command()), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "artifacts"),
    ]  # fmt: skip
    with (workdir / "server.log").open("wb") as log:
        # cwd: from the checkout, `python -m` would import its operator/ as the standard library module
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (workdir / "server.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"MLflow not healthy after {START_TIMEOUT_S:g}s"
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):  # whatever of the group is left
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
