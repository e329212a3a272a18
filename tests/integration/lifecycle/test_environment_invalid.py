"""kwok tier: an RLRun naming an environment nobody installed ends Failed with reason EnvironmentInvalid and
the env-worker's message (the list of installed environments) on the RLRun, not only in a pod log.

kwok runs no container, so the test plays the kubelet: it reports the env-worker pod as a crash-looping
container whose last termination message is what `rlrun-env-worker` writes for that spec (the message is
built by the real registry; tests/unit/operator_core/test_environment_invalid.py runs the real entry point).
"""

import json

import pytest
from operator_harness import condition, create_run, events, pods, run_doc, run_status, running_operator

from rlrun.runtime.config import ENVIRONMENT_INVALID
from rlrun.runtime.envs.registry import EnvironmentNotFound, make_environment

pytestmark = pytest.mark.cluster


def test_unknown_environment_fails_the_run_with_the_reason_on_the_rlrun(crd, namespace, wait_for):
    kube = crd
    with pytest.raises(EnvironmentNotFound) as err:
        make_environment("my-task")
    message = f"{ENVIRONMENT_INVALID}: {err.value}"
    doc = run_doc()
    doc["spec"]["envWorkers"]["environment"] = {"id": "my-task"}
    with running_operator(kube, namespace):
        create_run(kube, namespace, doc)
        worker = wait_for(lambda: (pods(kube, namespace, "env-workers") or [None])[0], 60, "env-worker pod")
        container = worker["spec"]["containers"][0]["name"]
        status = {
            "name": container,
            "image": worker["spec"]["containers"][0]["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 78, "reason": "Error", "message": message}},
        }
        kube.kubectl(
            "patch", "pod", worker["metadata"]["name"], "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"containerStatuses": [status]}}),
        )  # fmt: skip
        wait_for(lambda: run_status(kube, namespace).get("phase") == "Failed", 30, "Failed")
        st = run_status(kube, namespace)
        assert st["reason"] == ENVIRONMENT_INVALID, st
        assert st["message"] == f"env-workers: {message}"
        ready = condition(st, "Ready")
        assert ready["reason"] == ENVIRONMENT_INVALID and "installed environments are" in ready["message"]
        assert ENVIRONMENT_INVALID in events(kube, namespace)
