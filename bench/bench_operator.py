"""Operator latency and footprint on a real kube-apiserver (etcd + apiserver, no kubelet/kwok).

    .venv/bin/python bench/bench_operator.py [N]        # 1 and N RLRuns (default 100)

Each run takes 2 ClusterIP Services (inference and trainer are headless); the test control plane's /16 Service
range (tests/controlplane.py) has room for the 100 of the issue-21 target (under 30 s).

Figure: create -> all 12 children exist (PVC, ConfigMap, progress Secret, 4 Services, a Deployment, a StatefulSet,
2 Jobs, NetworkPolicy), for 1 and for N RLRuns created at once; operator RSS after the N.
Baseline, same run and server: `kubectl create` of the same number of bare ConfigMaps.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests/integration/operator"))

from controlplane import ControlPlane, wait_until  # noqa: E402
from operator_harness import OperatorThread  # noqa: E402

from rlrun.operator.crd import crd_yaml  # noqa: E402
from rlrun.operator.main import OperatorConfig  # noqa: E402

CHILDREN = 12


def docs(n: int, prefix: str) -> str:
    base = yaml.safe_load((REPO / "manifests/examples/color-codeword.yaml").read_text())
    items = [{**base, "metadata": {"name": f"{prefix}{i}"}} for i in range(n)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def count_children(plane: ControlPlane, ns: str) -> int:
    out = plane.kubectl(
        "get", "pvc,cm,secret,svc,deploy,sts,job,networkpolicy", "-n", ns, "-l", "app.kubernetes.io/name=rlrun",
        "-o", "name",
    ).stdout  # fmt: skip
    return len(out.split())


def timed_runs(plane: ControlPlane, ns: str, n: int, prefix: str) -> float:
    before = count_children(plane, ns)
    start = time.perf_counter()
    plane.kubectl("create", "-n", ns, "-f", "-", input=docs(n, prefix))
    wait_until(lambda: count_children(plane, ns) - before >= n * CHILDREN, 300, f"{n} runs' children", 0.2)
    return time.perf_counter() - start


def timed_configmaps(plane: ControlPlane, ns: str, n: int, prefix: str) -> float:
    items = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{prefix}{i}"}} for i in range(n)
    ]
    start = time.perf_counter()
    plane.kubectl(
        "create", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    return time.perf_counter() - start


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plane = ControlPlane(Path(tmp), full=False)
        plane.start()
        try:
            plane.kubectl("apply", "--server-side", "-f", "-", input=crd_yaml())
            plane.kubectl("create", "namespace", "bench")
            time.sleep(2)  # let the CRD's watch cache settle
            config = OperatorConfig(namespaces=["bench"], kubeconfig=str(plane.kubeconfig), progress_port=0,
                                    interval_seconds=30)  # fmt: skip
            op = OperatorThread(config).start()
            rss0 = psutil.Process().memory_info().rss
            try:
                one = timed_runs(plane, "bench", 1, "one-")
                many = timed_runs(plane, "bench", n, "r-")
                rss = psutil.Process().memory_info().rss
            finally:
                op.stop()
            cm1 = timed_configmaps(plane, "bench", 1, "cm1-")
            cm_many = timed_configmaps(plane, "bench", n, "cmn-")
        finally:
            plane.stop()
    print(
        f"create -> all {CHILDREN} children, 1 RLRun:    {one:6.2f} s   (baseline: 1 bare ConfigMap   {cm1:5.2f} s)"
    )
    print(
        f"create -> all children, {n} RLRuns: {many:6.2f} s   (baseline: {n} bare ConfigMaps {cm_many:5.2f} s)"
    )
    print(
        f"process RSS with the operator thread after {n} runs: {rss / 2**20:.0f} MiB (start {rss0 / 2**20:.0f})"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
