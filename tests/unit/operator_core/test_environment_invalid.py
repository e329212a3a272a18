"""An env-worker whose environment is unknown (or whose args are bad) stops at start with the list of what
is installed, and the operator fails the run with reason EnvironmentInvalid and that message.

The role side runs the real `rlrun-env-worker` entry point; the operator side feeds what it printed to
plan() as the kubelet reports a crash-looping Deployment pod: `lastState.terminated.message` (the
termination message; FallbackToLogsOnError gives the log tail when there is none). The same path on the
kwok tier, through the real API server and the operator process, is in
tests/integration/lifecycle/test_environment_invalid.py.
"""

import json
import subprocess
import sys
from pathlib import Path

from operator_builders import body, find, observed, rendered
from test_reconcile import run_pass

from rlrun.operator.observe import observe
from rlrun.operator.status import RunStatus


def env_worker_start(tmp_path: Path, environment: dict) -> tuple[int, str]:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"runId": "byo", "assetRoot": str(tmp_path), "envWorkers": {"environment": environment}})
    )
    argv = [str(Path(sys.executable).with_name("rlrun-env-worker")), "--config", str(config),
            "--inference-url", "http://127.0.0.1:9"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


def crash_looping(deployment_pod_labels: dict, message: str) -> dict:
    """A Deployment pod as the kubelet reports it after its container exited 78 and was restarted."""
    terminated = {"exitCode": 78, "reason": "Error", "message": message}
    status = {"name": "env-worker", "restartCount": 3, "ready": False,
              "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": terminated}}  # fmt: skip
    return {
        "metadata": {"name": "color-codeword-envs-abc-x", "labels": deployment_pod_labels},
        "status": {"phase": "Running", "containerStatuses": [status]},
    }


def test_unknown_environment_stops_the_env_worker_and_fails_the_run(tmp_path):
    code, stderr = env_worker_start(tmp_path, {"id": "colour-codeword"})
    assert code == 78, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(
        "EnvironmentInvalid: unknown environment 'colour-codeword': installed environments are "
        "calculator [built-in], color-codeword [built-in], "
    ), line

    data = body()
    objs = observed(rendered(data)(0))
    labels = find(objs, "Deployment", "env-workers")["spec"]["template"]["metadata"]["labels"]
    p = run_pass(data, observe(objs, [crash_looping(labels, stderr)]), RunStatus(observed_generation=1))
    assert (p.status.phase, p.status.reason) == ("Failed", "EnvironmentInvalid")
    assert p.status.message.startswith(
        "env-workers: EnvironmentInvalid: unknown environment 'colour-codeword'"
    )
    ready = next(c for c in p.status.conditions if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "EnvironmentInvalid")
    assert "installed environments are calculator [built-in], color-codeword [built-in]" in ready["message"]
    assert [e.reason for e in p.events if e.type == "Warning"] == ["EnvironmentInvalid"]


def test_bad_environment_args_fail_the_same_way(tmp_path):
    code, stderr = env_worker_start(tmp_path, {"id": "text-reverse", "args": {"num_words": 1}})
    assert code == 78, stderr
    assert stderr.strip().splitlines()[-1] == (
        "EnvironmentInvalid: environment 'text-reverse': bad args {'num_words': 1}: "
        "num_words must be in 2..8, got 1"
    )


def test_a_pod_that_crashed_for_another_reason_is_not_a_start_failure():
    data = body()
    objs = observed(rendered(data)(0))
    labels = find(objs, "Deployment", "env-workers")["spec"]["template"]["metadata"]["labels"]
    pod = crash_looping(labels, "Traceback ...\nRuntimeError: inference unreachable")
    p = run_pass(data, observe(objs, [pod]), RunStatus(observed_generation=1))
    assert p.status.phase != "Failed"
