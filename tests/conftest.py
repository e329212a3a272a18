"""Run-wide fixtures: a real Kubernetes control plane (see tests/controlplane.py) and helpers to drive it.

- `apiserver`: etcd + kube-apiserver (RBAC, SA signing keys, admin kubeconfig). Session-scoped.
- `cluster`: the same plus kube-controller-manager, kube-scheduler and kwok with nodes gpu-node-0/1
  (nvidia.com/gpu: 8) and cpu-node-0, so Deployments/Jobs really get pods that are scheduled and Running,
  and garbage collection really deletes owned objects. Session-scoped.
- `namespace`: a fresh namespace on `cluster` if the test uses it, else on `apiserver`.
- `wait_for(predicate, timeout=30, message=...)`: poll with a readable failure.
- `set_pod_phase(namespace, pod, phase, reason=..., exit_code=...)`: play the kubelet (kwok runs no
  containers), e.g. to make a trainer pod fail.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from controlplane import ControlPlane, wait_until


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, full: bool) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp(name), full=full)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    yield from _start(tmp_path_factory, "apiserver", full=False)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    yield from _start(tmp_path_factory, "cluster", full=True)


@pytest.fixture
def kube(request: pytest.FixtureRequest) -> ControlPlane:
    """The control plane this test asked for (`cluster` wins over `apiserver`)."""
    return request.getfixturevalue("cluster" if "cluster" in request.fixturenames else "apiserver")


@pytest.fixture
def namespace(kube: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    def _wait_for(
        predicate: Callable[[], Any], timeout: float = 30, message: str = "condition", interval: float = 0.2
    ) -> Any:
        return wait_until(predicate, timeout, message, interval)

    return _wait_for


@pytest.fixture
def set_pod_phase(kube: ControlPlane) -> Callable[..., None]:
    def _set(
        namespace: str, pod: str, phase: str, reason: str = "Error", exit_code: int | None = None
    ) -> None:
        code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
        pod_obj = json.loads(kube.kubectl("get", "pod", pod, "-n", namespace, "-o", "json").stdout)
        statuses = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason}},
            }
            for c in pod_obj["spec"]["containers"]
        ]
        ready = [{"type": "Ready", "status": "False"}]
        patch = {
            "status": {"phase": phase, "reason": reason, "containerStatuses": statuses, "conditions": ready}
        }
        kube.kubectl(
            "patch",
            "pod",
            pod,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(patch),
        )

    return _set
