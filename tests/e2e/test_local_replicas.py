"""`rlrun local` with `inference.replicas: 2`: every replica is reloaded with every step's weights, and a
replica that stops serving fails the run instead of leaving rollouts to a stale policy."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from .conftest import SHORT_RUN

pytestmark = pytest.mark.e2e
STEPS = 6


def _spec(tmp_path: Path) -> Path:
    doc = yaml.safe_load(SHORT_RUN.read_text())
    doc["metadata"]["name"] = "replicas"
    doc["spec"]["inference"] = {"replicas": 2}
    doc["spec"]["orchestrator"].update(batchSize=32, maxSteps=STEPS)
    doc["spec"]["trainer"].update(processesPerNode=1, microBatchSize=32, checkpointInterval=STEPS)
    path = tmp_path / "replicas.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _start(tmp_path: Path) -> subprocess.Popen:
    argv = [
        str(Path(sys.executable).with_name("rlrun")),
        "local",
        str(_spec(tmp_path)),
        "--output-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _loaded_versions(log: Path) -> list[int]:
    return [int(v) for v in re.findall(r"loaded weights \S+ as version (\d+)", log.read_text())]


@pytest.mark.timeout(900)
def test_both_replicas_serve_every_new_version(tmp_path, no_leftover_processes) -> None:
    proc = _start(tmp_path)
    out, _ = proc.communicate(timeout=840)
    assert proc.returncode == 0, out[-4000:]
    logs = tmp_path / "run_replicas" / "logs"
    for name in ("inference", "inference-1"):
        assert _loaded_versions(logs / f"{name}.log") == list(range(1, STEPS + 1)), name
    metrics = [
        json.loads(line) for line in (tmp_path / "run_replicas" / "orchestrator" / "metrics.jsonl").open()
    ]
    # served_version is the oldest replica's: the orchestrator waited for both before each step.
    assert all(m["served_version"] >= m["step"] - 1 for m in metrics), metrics


@pytest.mark.timeout(900)
def test_a_replica_that_stops_serving_fails_the_run(tmp_path, no_leftover_processes) -> None:
    proc = _start(tmp_path)
    progress = tmp_path / "run_replicas" / "progress.json"
    deadline = time.monotonic() + 600
    while not (progress.exists() and json.loads(progress.read_text()).get("step", 0) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "run did not reach step 2"
        time.sleep(0.5)
    servers = [
        p for p in psutil.Process(proc.pid).children(recursive=True)
        if "rlrun.runtime.inference" in " ".join(p.cmdline())
    ]  # fmt: skip
    replica = sorted(servers, key=lambda p: p.create_time())[1]  # started second: inference-1
    os.killpg(replica.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "role inference-1 failed" in out, out[-3000:]
    final = json.loads(progress.read_text())
    assert final["step"] < STEPS and final["state"] != "succeeded"
