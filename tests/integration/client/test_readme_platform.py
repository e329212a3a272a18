"""README "From a platform": its Python example and its pipeline step run exactly as written against the
real API server and operator (kwok tier), while the test plays the runtime; its exit-code table is the
client's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from operator_harness import bind_volume, running_operator
from runtime_player import MAX_STEPS, kubeconfig_for, push_progress, running_orchestrator, status

from rlrun.client.errors import EXIT_CODE_MEANINGS
from rlrun.client.request import name_for_request

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[3]


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## From a platform\n")
    return text[start : text.index("\n## ", start + 1)]


def block(lang: str) -> str:
    (code,) = re.findall(rf"```{lang}\n(.*?)```", section(), re.S)
    return code


def test_the_exit_code_table_is_the_clients():
    rows = re.findall(r"^\| (\d+) \((\w+)\) \| (.+) \|$", section(), re.M)
    assert [(int(c), n, m) for c, n, m in rows] == [
        (int(c), c.name.lower(), m) for c, m in EXIT_CODE_MEANINGS.items()
    ]


def play_to_success(kube, namespace, name, op, set_pod_phase, wait_for, errors):
    try:
        wait_for(lambda: running_orchestrator(kube, namespace, name), 120, f"{name} orchestrator Running")
        wait_for(lambda: status(kube, namespace, name).get("phase") == "Running", 60, f"{name} Running")
        for step in (5, 30, MAX_STEPS):
            push_progress(kube, namespace, name, op.progress_port, step, step / MAX_STEPS)
        last = lambda: (status(kube, namespace, name).get("progress") or {}).get("step") == MAX_STEPS  # noqa: E731
        wait_for(last, 30, "last step reported")
        set_pod_phase(namespace, running_orchestrator(kube, namespace, name), "Succeeded")
    except BaseException as e:  # surfaced by the test
        errors.append(e)


def run_example(kube, namespace, op, set_pod_phase, wait_for, name, argv, env):
    errors: list[BaseException] = []
    bind_volume(kube, namespace, name)
    player = threading.Thread(
        target=play_to_success, args=(kube, namespace, name, op, set_pod_phase, wait_for, errors)
    )
    player.start()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    player.join(60)
    assert not errors, errors
    return proc


def test_readme_examples_run_as_written(crd, namespace, wait_for, set_pod_phase, tmp_path):
    kube = crd
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig_for(kube, tmp_path / "kubeconfig", namespace)),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PIPELINE_RUN_ID": "build-77",
    }
    python, bash = block("python"), block("bash")
    request = re.search(r'request = "([^"]+)"', python).group(1)
    with running_operator(kube, namespace) as op:
        name = name_for_request("color-codeword", request)
        proc = run_example(
            kube, namespace, op, set_pod_phase, wait_for, name, [sys.executable, "-c", python], env
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(rf"{name} Running step \d+/{MAX_STEPS}", proc.stdout), proc.stdout
        assert (
            f"Succeeded at step {MAX_STEPS}: weights /data/outputs/run_{name}/weights/step_{MAX_STEPS} on {name}-assets"
            in proc.stdout
        )

        again = subprocess.run([sys.executable, "-c", python], cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        assert again.returncode == 0 and f"{name} Succeeded step {MAX_STEPS}/{MAX_STEPS}" in again.stdout, (
            "the retry finds the run"
        )

        proc = run_example(
            kube, namespace, op, set_pod_phase, wait_for, "codeword-build-77", ["bash", "-c", bash], env
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"final weights: /data/outputs/run_codeword-build-77/weights/step_{MAX_STEPS}" in proc.stdout
        assert "Succeeded" in proc.stdout
