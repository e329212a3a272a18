"""The test control plane is real: these guard the fixtures every operator test stands on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from controlplane import CPU_NODES, GPU_NODES, ControlPlane

pytestmark = pytest.mark.cluster

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: registry.invalid/web:1, resources: {limits: {nvidia.com/gpu: "1"}}}
"""

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.rlrun.dev}
spec:
  group: test.rlrun.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1, maximum: 8}
"""


def _json(kube: ControlPlane, *args: str) -> dict:
    return json.loads(kube.kubectl(*args, "-o", "json").stdout)


def test_deployment_pods_are_scheduled_on_kwok_nodes_and_run(cluster, namespace, wait_for):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)

    def running() -> list[dict]:
        pods = _json(cluster, "get", "pods", "-n", namespace, "-l", "app=web")["items"]
        ok = [p for p in pods if p["status"].get("phase") == "Running"]
        return ok if len(ok) == 2 else []

    pods = wait_for(running, timeout=60, message="2 web pods Running")
    # GPU requests only fit the GPU nodes: the real scheduler honoured the kwok nodes' capacity.
    assert {p["spec"]["nodeName"] for p in pods} <= set(GPU_NODES)
    wait_for(
        lambda: (
            _json(cluster, "get", "deployment", "web", "-n", namespace)["status"].get("readyReplicas") == 2
        ),
        timeout=30,
        message="deployment reports 2 ready replicas",
    )


def test_deleting_owner_garbage_collects_dependents(cluster, namespace, wait_for):
    owner = _json(cluster, "create", "configmap", "owner", "-n", namespace)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dependent", "ownerReferences": [ref]},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(dependent))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        lambda: (
            cluster.kubectl("get", "configmap", "dependent", "-n", namespace, check=False).returncode != 0
        ),
        timeout=60,
        message="the garbage collector deletes the dependent ConfigMap",
    )


def test_stale_resource_version_gets_409(apiserver, namespace):
    api = client.CoreV1Api(apiserver.api_client())
    cm = api.create_namespaced_config_map(namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    stale = cm.metadata.resource_version
    api.replace_namespaced_config_map("cm", namespace, {"metadata": {"name": "cm"}, "data": {"a": "2"}})
    body = {"metadata": {"name": "cm", "resourceVersion": stale}, "data": {"a": "3"}}
    with pytest.raises(ApiException) as err:
        api.replace_namespaced_config_map("cm", namespace, body)
    assert err.value.status == 409


def test_structural_crd_rejects_invalid_object_with_apiserver_message(apiserver, namespace, wait_for):
    apiserver.kubectl("apply", "-f", "-", input=CRD)
    wait_for(
        lambda: apiserver.kubectl("get", "widgets", "-n", namespace, check=False).returncode == 0,
        timeout=30,
        message="Widget CRD established",
    )
    bad = "apiVersion: test.rlrun.dev/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 9}\n"
    proc = apiserver.kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert proc.returncode != 0
    assert "spec.size: Invalid value: 9: spec.size in body should be less than or equal to 8" in proc.stderr


def test_kubectl_through_written_kubeconfig_lists_kwok_nodes(cluster):
    out = subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "get", "nodes", "-o", "name"],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(out) == sorted(f"node/{n}" for n in GPU_NODES + CPU_NODES)


def test_stop_leaves_no_process_behind(tmp_path):
    plane = ControlPlane(tmp_path / "cp").start()
    pids = [p.pid for _, p in plane.procs]
    plane.stop()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} still running after stop()"
