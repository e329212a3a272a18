"""The trainer's Prometheus side: every rank of one pod behind the pod's one metrics port.

torchrun starts several ranks per pod but a pod has one `metrics` port, so the ranks use prometheus_client's
multiprocess mode: each writes its values to files in a directory they share and local rank 0 serves them
all (every series labelled `rank`). prometheus_client picks that mode when it is first imported, so `start`
sets the directory before anything imports it; this module imports it only inside its functions.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import tempfile
from collections.abc import Mapping, MutableMapping
from typing import Any

import psutil

from rlrun import pod_contract

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiproc_dir(environ: Mapping[str, str], agent_pid: int, agent_started: float, tmp: str) -> str:
    """The directory the ranks of one torchrun agent share (pure): named after the agent's pid and start
    time, so a restarted container (often the same pid) never adds a dead attempt's counters."""
    if existing := environ.get(MULTIPROC_ENV):
        return existing
    return os.path.join(tmp, "rlrun-trainer-metrics", f"{agent_pid}-{int(agent_started * 1000)}")


def start(environ: MutableMapping[str, str]) -> tuple[str | None, tuple[str, int] | None]:
    """Without $RLRUN_METRICS_PORT: nothing (the ranks' figures stay in memory, nobody serves them). Else
    choose and create the shared directory (before prometheus_client is imported) and serve it from local
    rank 0. Returns the directory and where it serves, if this rank does."""
    if not environ.get(pod_contract.METRICS_PORT_ENV):
        return None, None
    agent = psutil.Process(os.getppid())
    path = multiproc_dir(environ, agent.pid, agent.create_time(), tempfile.gettempdir())
    environ[MULTIPROC_ENV] = path
    os.makedirs(path, exist_ok=True)
    from rlrun.runtime import metrics

    if environ.get("LOCAL_RANK", "0") != "0":
        return path, None
    return path, metrics.serve_from_env(environ, multiproc_dir=path)


def stop(path: str | None, served: bool) -> None:
    """The serving rank (local rank 0) removes the shared directory when it exits (the others' open files
    stay valid)."""
    if path is not None and served:
        with contextlib.suppress(OSError):
            shutil.rmtree(path)


def peak_memory(device: Any) -> tuple[str, int]:
    """(device kind, bytes): CUDA's peak allocation on GPU, the process's peak resident set on CPU."""
    if device.type == "cuda":
        import torch

        return "cuda", int(torch.cuda.max_memory_allocated(device))
    return "cpu", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def record_step(record: Mapping[str, Any], device: Any) -> None:
    """Mirror one rank's metrics_rank<r>.jsonl line into its Prometheus series."""
    from rlrun.runtime import metrics

    metrics.record_trainer_step(record, peak_memory(device))
