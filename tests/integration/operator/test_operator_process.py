"""The real `rlrun operator` process: SIGTERM stops it promptly; two replicas sharing a kopf peering elect
exactly one active replica that takes over when the active one is killed; a namespace it may not read is
reported while the others are served."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest
from controlplane import free_port, write_kubeconfig
from operator_harness import create_run, end_process, get, operator_process, run_doc

pytestmark = pytest.mark.cluster

KOPF_RETRY_SECONDS = 70
"""Longer than kopf's default error backoffs (1+1+2+3+5+8+13+21 = 54 s) for a failing watch request."""

PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfpeerings.kopf.dev"},
    "spec": {
        "group": "kopf.dev",
        "scope": "Namespaced",
        "names": {"kind": "KopfPeering", "plural": "kopfpeerings", "singular": "kopfpeering"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


def progress_up(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200


def test_sigterm_stops_the_operator_promptly(crd, namespace, wait_for, tmp_path: Path):
    """Before: kopf stopped on SIGTERM but the process waited forever for a thread blocked on the unset
    stop flag, so every rollout waited for SIGKILL."""
    port = free_port()
    proc = operator_process(crd, namespace, tmp_path / "op.log", "--progress-port", str(port))
    try:
        wait_for(lambda: progress_up(port), 90, "operator serving", interval=0.5)
        time.sleep(1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
        log = (tmp_path / "op.log").read_text()
        assert rc == 0, log[-3000:]
        assert time.monotonic() - started < 20
    except BaseException:
        print((tmp_path / "op.log").read_text()[-4000:])
        raise
    finally:
        end_process(proc)


def children_of(kube, namespace: str, run: str) -> int:
    out = get(kube, namespace, "deploy,job,svc", "-l", f"app.kubernetes.io/instance={run}")
    return len(out["items"]) if out else 0


def test_two_replicas_one_active_and_a_standby_takes_over_when_it_is_killed(
    crd, namespace, wait_for, tmp_path: Path
):
    """Before: both replicas had the same priority, kopf paused both ("possibly conflicting operators")
    and no new RLRun got a child; meanwhile each replica's periodic pass still wrote."""
    kube = crd
    kube.kubectl("apply", "-f", "-", input=json.dumps(PEERING_CRD))
    kube.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=60s")
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "rlrun"}}
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(peering))
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    flags = ("--peering", "rlrun", "--peering-lifetime", "4")
    procs = [
        operator_process(kube, namespace, log, "--progress-port", str(port), *flags)
        for port, log in zip(ports, logs, strict=True)
    ]
    try:
        for port in ports:
            wait_for(lambda p=port: progress_up(p), 60, "replica serving")

        def answers(port: int) -> int:
            url = f"http://127.0.0.1:{port}/v1/namespaces/{namespace}/rlruns/x/progress"
            try:
                return httpx.post(url, timeout=2).status_code
            except httpx.ConnectError:
                return 0  # killed

        def active() -> list[int]:
            # a standby refuses before looking at the token (503), the active one wants a token (401)
            return [i for i, port in enumerate(ports) if answers(port) == 401]

        leader = wait_for(lambda: (a := active()) and len(a) == 1 and a, 60, "exactly one active")[0]
        assert answers(ports[1 - leader]) == 503
        create_run(kube, namespace, run_doc("first"))
        wait_for(lambda: children_of(kube, namespace, "first") >= 7, 60, "first run reconciled")
        procs[leader].kill()  # SIGKILL: no goodbye in the peering object
        procs[leader].wait(timeout=10)
        standby = 1 - leader
        wait_for(lambda: active() == [standby], 60, "the standby took over")
        create_run(kube, namespace, run_doc("second"))
        wait_for(lambda: children_of(kube, namespace, "second") >= 7, 60, "second run reconciled")
    except BaseException:
        for log in logs:
            print(log.read_text()[-4000:])
        raise
    finally:
        for proc in procs:
            end_process(proc)
        # the session's cluster is shared: the chart's install test creates this CRD as a Helm resource
        kube.kubectl("delete", "crd", "kopfpeerings.kopf.dev", "--wait=true", "--timeout=60s")


def test_an_unreadable_namespace_is_reported_and_the_others_are_served(crd, namespace, wait_for, tmp_path):
    """Before: kopf escalated the Forbidden watch of one namespace and stopped serving all of them."""
    kube = crd
    forbidden = f"{namespace}-x"
    kube.kubectl("create", "namespace", forbidden)
    rbac = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "op"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "op"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
            "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": namespace}],
        },
    ]
    kube.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": rbac}),
    )
    token = kube.kubectl("create", "token", "op", "-n", namespace, "--duration=1h").stdout.strip()
    config = write_kubeconfig(tmp_path / "op.kubeconfig", kube.server, kube.pki, user="op", token=token)
    port = free_port()
    proc = operator_process(
        kube, namespace, tmp_path / "op.log", "--namespace", forbidden, "--progress-port", str(port),
        kubeconfig=config,
    )  # fmt: skip
    started = time.monotonic()
    try:
        create_run(kube, namespace, run_doc("served"))
        wait_for(lambda: children_of(kube, namespace, "served") >= 7, 90, "the readable namespace is served")
        log = (tmp_path / "op.log").read_text()
        assert f"namespace {forbidden} is not watched" in log and "list rlrun.dev/rlruns" in log, log[-3000:]
        # kopf retries a Forbidden watch with backoff (54 s) before it escalates and stops serving
        time.sleep(max(0.0, KOPF_RETRY_SECONDS - (time.monotonic() - started)))
        create_run(kube, namespace, run_doc("later"))
        wait_for(lambda: children_of(kube, namespace, "later") >= 7, 60, "still served after kopf's retries")
        assert proc.poll() is None
    finally:
        end_process(proc)
        kube.kubectl("delete", "namespace", forbidden, "--wait=false", check=False)
