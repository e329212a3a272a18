"""Shared by the operator and lifecycle integration tests (and bench/bench_operator.py): install the CRD,
run the operator in-process (`OperatorThread`: namespaced, fast timer) or as the real `rlrun operator`
process, create runs from the example, read objects as JSON.

Imported by name: each folder's conftest.py puts this folder on sys.path.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from controlplane import _die_with_parent as die_with_parent
from controlplane import wait_until

from rlrun.operator import names
from rlrun.operator.crd import crd_yaml
from rlrun.operator.kube import Kube
from rlrun.operator.main import OperatorConfig, serve
from rlrun.operator.restarts import StallPolicy

EXAMPLE = Path(__file__).resolve().parents[3] / "manifests/examples/color-codeword.yaml"


class OperatorThread:
    """The operator in a background thread with its own loop: for tests and benchmarks."""

    def __init__(self, config: OperatorConfig, kube_factory: Callable[[Any], Kube] = Kube) -> None:
        self.config, self.stop_flag, self.ready_flag = config, threading.Event(), threading.Event()
        self.kube_factory = kube_factory
        self.error: BaseException | None = None
        self.progress_port = 0
        self.thread = threading.Thread(target=self._run, name="rlrun-operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(serve(self.config, self.stop_flag, self.ready_flag, self._bound, self.kube_factory))
        except BaseException as e:  # surfaced by start()/stop()
            self.error = e
            self.ready_flag.set()

    def _bound(self, port: int) -> None:
        self.progress_port = port

    def start(self, timeout: float = 30) -> OperatorThread:
        self.thread.start()
        if not self.ready_flag.wait(timeout) or self.error:
            self.stop()
            raise RuntimeError(f"operator did not start within {timeout}s") from self.error
        return self

    def stop(self, timeout: float = 30) -> None:
        self.stop_flag.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"operator thread did not stop within {timeout}s")


def install_crd(kube: Any) -> None:
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crd_yaml())
    # `kubectl wait` errors (not waits) while the fresh CRD has no conditions yet: poll instead.
    wait_until(
        lambda: (
            kube.kubectl(
                "wait", "--for=condition=Established", f"crd/{names.CRD_NAME}", "--timeout=10s", check=False
            ).returncode
            == 0
        ),
        60,
        "CRD Established",
    )


@contextmanager
def running_operator(
    kube: Any, namespace: str, kube_factory: Callable[[Any], Kube] = Kube, **overrides: Any
) -> Iterator[OperatorThread]:
    config = OperatorConfig(
        namespaces=[namespace],
        kubeconfig=str(kube.kubeconfig),
        progress_host="127.0.0.1",
        progress_port=0,
        progress_url="http://127.0.0.1:8081",
        interval_seconds=1.0,
        stall=StallPolicy(factor=5, floor_seconds=300),
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    op = OperatorThread(config, kube_factory).start(timeout=30)
    try:
        yield op
    finally:
        op.stop(timeout=30)


def run_doc(name: str = "demo", **spec: Any) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": name}
    doc["spec"].update(spec)
    return doc


def create_run(kube: Any, namespace: str, doc: dict[str, Any]) -> None:
    """Create the run, plus a PersistentVolume pre-bound to its claim (see `bind_volume`)."""
    bind_volume(kube, namespace, doc["metadata"]["name"])
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def bind_volume(kube: Any, namespace: str, name: str) -> None:
    """A PersistentVolume pre-bound to run `name`'s claim: the test cluster has no volume provisioner,
    and the scheduler will not place pods whose claim is unbound."""
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        # A fresh name each time: a run deleted and created again under the same name leaves its old volume
        # being released and deleted (reclaim policy Delete), and applying over that name races the deletion.
        "metadata": {
            "name": f"pv-{namespace}-{name}-{uuid.uuid4().hex[:8]}",
            "labels": {"rlrun-test": namespace},
        },
        "spec": {
            "capacity": {"storage": "100Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "",
            "hostPath": {"path": f"/tmp/rlrun-test/{namespace}/{name}"},
            "claimRef": {"namespace": namespace, "name": f"{name}-assets"},
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(volume))


def get(kube: Any, namespace: str, *what: str) -> dict[str, Any] | None:
    proc = kube.kubectl("get", *what, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def run_status(kube: Any, namespace: str, name: str = "demo") -> dict[str, Any]:
    obj = get(kube, namespace, "rlrun", name)
    return (obj or {}).get("status") or {}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def pods(kube: Any, namespace: str, component: str, run: str = "demo") -> list[dict[str, Any]]:
    sel = f"{names.LABEL_INSTANCE}={run},{names.LABEL_COMPONENT}={component}"
    return get(kube, namespace, "pods", "-l", sel)["items"]


def events(kube: Any, namespace: str) -> list[str]:
    items = [e for e in get(kube, namespace, "events")["items"] if e["involvedObject"]["kind"] == "RLRun"]
    return [e["reason"] for e in sorted(items, key=lambda e: e["metadata"]["creationTimestamp"])]


def operator_process(
    kube: Any, namespace: str, log_path: Path, *extra: str, kubeconfig: Path | None = None
) -> subprocess.Popen[bytes]:
    """The real `rlrun operator` command (its own process, signals and all), logging to `log_path`."""
    cmd = [str(Path(sys.executable).parent / "rlrun"), "operator", "--namespace", namespace,
           "--kubeconfig", str(kubeconfig or kube.kubeconfig), "--interval", "1", *extra]  # fmt: skip
    log = open(log_path, "wb")  # noqa: SIM115 (owned by the process)
    # own session (signals go to it alone) and SIGKILL when the test process dies, however it dies
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=die_with_parent, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """Kill a test's operator process (and its group) if it is still there."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
