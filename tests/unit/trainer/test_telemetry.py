"""Where the trainer's ranks keep their shared metrics, and how a role's metrics port is read."""

from __future__ import annotations

import pytest

from rlrun.runtime import metrics
from rlrun.runtime.trainer.telemetry import MULTIPROC_ENV, multiproc_dir


def test_each_torchrun_agent_start_gets_its_own_directory() -> None:
    first = multiproc_dir({}, 7, 1000.5, "/tmp")
    assert first == "/tmp/rlrun-trainer-metrics/7-1000500"
    # a restarted container often reuses the pid: the start time keeps a dead attempt's counters apart
    assert multiproc_dir({}, 7, 2000.0, "/tmp") != first
    assert multiproc_dir({MULTIPROC_ENV: "/given"}, 7, 1000.5, "/tmp") == "/given"


def test_no_port_no_server_and_a_bad_port_is_named() -> None:
    assert metrics.serve_from_env({}) is None
    for bad in ("http", "0", "70000"):
        with pytest.raises(ValueError, match=rf"\$RLRUN_METRICS_PORT must be a TCP port, got '{bad}'"):
            metrics.serve_from_env({"RLRUN_METRICS_PORT": bad})


def test_the_trainer_imports_prometheus_client_only_after_choosing_the_directory() -> None:
    """prometheus_client picks multiprocess mode at import: imported earlier, ranks would not share."""
    import subprocess
    import sys

    probe = "import sys, rlrun.runtime.trainer.main; print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "False"


def test_without_a_metrics_port_the_ranks_share_no_directory() -> None:
    from rlrun.runtime.trainer import telemetry

    environ: dict[str, str] = {"LOCAL_RANK": "0"}
    assert telemetry.start(environ) == (None, None)
    assert MULTIPROC_ENV not in environ  # nothing left in /tmp by trainers nobody scrapes (tests, ...)
