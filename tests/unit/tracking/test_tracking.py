"""Tracking's pure parts, and that no tracking library is imported unless the run configures it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.tracking import TrackingState, flat_params, new_records, redact, sample_rows

PROBE = """
import json, sys
from rlrun.runtime.config import RuntimeConfig
from rlrun.runtime.tracking import make_sinks
import rlrun.runtime.orchestrator.main  # the role that tracks, whole
make_sinks(RuntimeConfig.model_validate(json.loads(sys.argv[1])))
print(json.dumps(sorted(m for m in ("mlflow", "wandb") if m in sys.modules)))
"""


@pytest.mark.parametrize(
    ("tracking", "imported"),
    [
        ({}, []),
        ({"mlflow": {"trackingUri": "http://127.0.0.1:9"}}, ["mlflow"]),
        ({"wandb": {"project": "p", "mode": "offline"}}, ["wandb"]),
    ],
)
def test_a_tracking_library_is_imported_only_when_configured(tmp_path, tracking, imported) -> None:
    cfg = {"assetRoot": str(tmp_path), "tracking": tracking}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert json.loads(out.splitlines()[-1]) == imported


def test_params_are_the_resolved_config_without_the_tracking_section(tmp_path) -> None:
    cfg = RuntimeConfig.model_validate(
        {
            "assetRoot": str(tmp_path),
            "tracking": {"mlflow": {"trackingUri": "https://u:secret@mlflow.example"}},
        }
    )
    params = flat_params(cfg)
    assert params["orchestrator.batchSize"] == "32" and params["model.name"] == "builtin:tiny-qwen2-vl"
    assert params["multimodal.datasetRoots"] == "[]"
    assert not any("secret" in v or k.startswith("tracking") for k, v in params.items())


def test_only_complete_trainer_lines_are_read_and_the_offset_resumes(tmp_path) -> None:
    path = tmp_path / "metrics_rank0.jsonl"
    assert new_records(path, 0) == ([], 0)  # the trainer has not written yet
    path.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "lo')
    records, offset = new_records(path, 0)
    assert records == [{"step": 0, "loss": 1.0}] and offset == len('{"step": 0, "loss": 1.0}\n')
    with path.open("a") as f:
        f.write('ss": 2.0}\n')
    assert new_records(path, offset)[0] == [{"step": 1, "loss": 2.0}]


def test_state_round_trips_atomically(tmp_path) -> None:
    path = tmp_path / "tracking" / "state.json"
    TrackingState({"mlflow": "abc"}, 120, 4).save(path)
    assert TrackingState.load(path) == TrackingState({"mlflow": "abc"}, 120, 4)
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_credentials_never_reach_a_log_line() -> None:
    environ = {"WANDB_API_KEY": "k3y-value", "MLFLOW_TRACKING_PASSWORD": "pw"}
    text = "ConnectionError: https://bob:pw@mlflow.example/api failed, key k3y-value"
    assert (
        redact(text, environ)
        == "ConnectionError: https://<redacted>@mlflow.example/api failed, key <redacted>"
    )


def test_sample_rows_keep_text_and_numbers() -> None:
    rollout = {"example_id": "e1", "env": "color-codeword", "prompt": [{"role": "user", "content": "hi"}],
               "completion": "red", "reward": 1, "advantage": 0.5, "policy_version": 3}  # fmt: skip
    assert sample_rows(7, [rollout]) == [
        [7, "e1", "color-codeword", '[{"role": "user", "content": "hi"}]', "red", 1.0, 0.5, 3]
    ]


def test_the_mlflow_server_pin_equals_the_client_pin() -> None:
    repo = Path(__file__).resolve().parents[3]
    build = (repo / "tools" / "mlflow" / "build.sh").read_text()
    pyproject = (repo / "pyproject.toml").read_text()
    version = build.split("MLFLOW_VERSION=", 1)[1].split()[0]
    assert f'"mlflow-skinny=={version}"' in pyproject


def test_a_configured_sink_without_its_library_fails_saying_what_to_install(tmp_path) -> None:
    probe = (
        "import sys, json; sys.modules['wandb'] = None\n"  # as if the library were not installed
        "from rlrun.runtime.config import RuntimeConfig\nfrom rlrun.runtime.tracking import make_sinks\n"
        "make_sinks(RuntimeConfig.model_validate(json.loads(sys.argv[1])))"
    )
    cfg = {"assetRoot": str(tmp_path), "tracking": {"wandb": {"project": "p", "mode": "offline"}}}
    out = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(cfg)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1
    assert (
        "spec.tracking needs 'wandb', which is not installed" in out.stderr
        and "rlrun[tracking]" in out.stderr
    )


def test_a_tracker_that_never_answers_never_holds_up_the_run(tmp_path, monkeypatch) -> None:
    """A real MLflow client against a loopback socket that accepts connections and never answers: steps
    are queued without waiting, past MAX_PENDING_STEPS they are dropped and counted, and close() returns
    within its bound."""
    import socket
    import time

    from prometheus_client import REGISTRY

    from rlrun.runtime.tracking import Tracker

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes handshakes; nobody ever reads
    uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
    cfg = RuntimeConfig.model_validate(
        {"assetRoot": str(tmp_path), "tracking": {"mlflow": {"trackingUri": uri}}}
    )
    monkeypatch.setattr(Tracker, "FINISH_TIMEOUT_SECONDS", 1.0)
    failures = REGISTRY.get_sample_value("rlrun_tracking_failures_total", {"sink": "mlflow"}) or 0.0
    tracker = Tracker.open(cfg, attempt=0)
    assert tracker is not None
    started = time.monotonic()
    rollouts = [{"example_id": "e", "env": "x", "prompt": "p", "completion": "c", "reward": 1.0}]
    for step in range(Tracker.MAX_PENDING_STEPS + 2):
        tracker.submit_step(step, {"step": step, "reward_mean": 0.5}, rollouts)
    assert time.monotonic() - started < 1.0
    dropped = REGISTRY.get_sample_value("rlrun_tracking_failures_total", {"sink": "mlflow"}) - failures
    assert dropped == 3  # start + 7 steps fill the queue: steps 7, 8 and 9 are not tracked
    tracker.close(succeeded=True)
    assert time.monotonic() - started < 5.0
    silent.close()
