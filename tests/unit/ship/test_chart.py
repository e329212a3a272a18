"""The Helm chart and the kubectl manifests generated from it, without a cluster: lint, render, strict
schema validation of every object, least-privilege RBAC derived from the operator's code, the values
schema, and drift between chart, manifests/ and the CRD generator.

The install itself (and whether the RBAC suffices) is proven on a real control plane in
tests/integration/ship/.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart import (
    CHART,
    MANIFESTS,
    NAMESPACE,
    OPERATOR,
    RELEASE,
    helm,
    manifest_files,
    set_args,
    template,
)

from rlrun.cli import build_parser
from rlrun.operator import names
from rlrun.operator.crd import crd_yaml
from rlrun.operator.kube import CHILD_KINDS
from rlrun.operator.namespaces import WATCHED

K8S_VERSION = "1.36"  # the test control plane's minor (tools/controlplane/build.sh)
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "KopfPeering", "ClusterKopfPeering"}
"""Custom resources kubernetes-validate has no schema for: checked field by field below."""

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "cluster-wide": {"rbac.clusterWide": True},
    "watch-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "monitoring": {"metrics.serviceMonitor.enabled": True, "metrics.podMonitor.enabled": True},
    "replicas": {"replicaCount": 3},
    "replicas-cluster-wide": {"replicaCount": 2, "rbac.clusterWide": True},
    "no-metrics": {"metrics.enabled": False, "metrics.serviceMonitor.enabled": True},
    "run-monitoring": {"runMonitoring.podMonitor.enabled": True, "runMonitoring.dashboard.enabled": True},
}


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata'].get('name') for o in found]}"
    return found[0]


def _kinds(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objs)


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _cli(objs: list[dict[str, Any]]) -> Any:
    """The Deployment's args parsed by the real `rlrun operator` parser: every flag the chart passes exists."""
    return build_parser().parse_args(["operator", *_container(objs)["args"]])


def _rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def _resource_of(api_version: str, kind: str) -> tuple[str, str]:
    group = api_version.rpartition("/")[0]
    lower = kind.lower()
    return group, lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


# ------------------------------------------------------------------------------------- lint, validate


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict_passes(variant):
    proc = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *set_args(VARIANTS[variant]))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_objects_validate_strictly(variant):
    objs = template(VARIANTS[variant])
    assert {"ServiceAccount", "Deployment", "Service"} <= set(_kinds(objs))
    for obj in objs:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{variant}: {obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")


def test_manifests_validate_strictly():
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for obj in filter(None, yaml.safe_load_all(path.read_text())):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# ------------------------------------------------------------------------------------------------ RBAC


def test_default_rbac_is_namespaced_and_exactly_what_the_operator_calls():
    objs = template()
    assert not [o for o in objs if o["kind"].startswith("Cluster")], _kinds(objs)
    role, binding = _one(objs, "Role"), _one(objs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}]
    rules = _rules(role)
    # Derived from the operator's code, so a new child kind without a rule fails here.
    children = {_resource_of(v, k) for v, k in CHILD_KINDS}
    run = (names.GROUP, names.PLURAL)
    expected = children | {run, (names.GROUP, f"{names.PLURAL}/status"), ("", "pods"), ("", "events")}
    assert set(rules) == expected
    for resource in children:
        assert "list" in rules[resource], resource  # kube.list_children
    for resource in children - {("", "secrets")}:
        assert {"create", "patch"} <= rules[resource], resource  # server-side apply / create
    assert rules[run] == {"get", "list", "watch", "patch", "delete"}
    assert rules[(names.GROUP, f"{names.PLURAL}/status")] == {"patch"}
    assert rules[("", "secrets")] == {"get", "list", "create"}  # the progress token only
    assert rules[("", "events")] == {"create"}
    for watched in WATCHED:  # what kopf lists and watches (namespaces.WATCHED, handlers.WATCHED_CHILDREN)
        assert {"list", "watch"} <= rules[watched], watched
    every_verb = set().union(*rules.values())
    assert every_verb <= {"get", "list", "watch", "create", "patch", "delete"}, every_verb
    assert "update" not in every_verb and "*" not in every_verb
    args = _cli(objs)
    assert args.namespace == [NAMESPACE] and not args.all_namespaces and args.peering is None


def test_cluster_wide_switches_to_cluster_roles_with_the_same_rules():
    namespaced, cluster = template(), template({"rbac.clusterWide": True})
    assert "Role" not in _kinds(cluster) and "RoleBinding" not in _kinds(cluster)
    role, binding = _one(cluster, "ClusterRole"), _one(cluster, "ClusterRoleBinding")
    assert "namespace" not in role["metadata"]
    assert _rules(role) == _rules(_one(namespaced, "Role"))
    assert binding["roleRef"]["kind"] == "ClusterRole"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}]
    args = _cli(cluster)
    assert args.all_namespaces and args.namespace == []


def test_watch_namespaces_get_a_role_each_and_a_flag_each():
    objs = template({"watchNamespaces": ["team-a", "team-b"]})
    roles = sorted(o["metadata"]["namespace"] for o in objs if o["kind"] == "Role")
    bindings = [o for o in objs if o["kind"] == "RoleBinding"]
    assert roles == ["team-a", "team-b"]
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b"}
    assert all(b["subjects"][0]["namespace"] == NAMESPACE for b in bindings)  # the SA lives with the operator
    assert _cli(objs).namespace == ["team-a", "team-b"]


def test_watch_namespaces_with_cluster_wide_is_refused():
    proc = helm("template", RELEASE, str(CHART), *set_args({"rbac.clusterWide": True, "watchNamespaces": ["a"]}),
                check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "watchNamespaces is for namespaced mode" in proc.stderr


def test_rbac_create_false_renders_no_rbac_but_keeps_the_service_account():
    objs = template({"rbac.create": False})
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & set(_kinds(objs))
    assert _one(objs, "ServiceAccount")["metadata"]["name"] == OPERATOR


# -------------------------------------------------------------------------------------------- peering


@pytest.mark.parametrize("cluster_wide", [False, True])
def test_replicas_turn_on_peering_with_its_crd_object_and_rules(cluster_wide):
    objs = template({"replicaCount": 3, "rbac.clusterWide": cluster_wide})
    deploy = _one(objs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    assert _cli(objs).peering == RELEASE
    env = {e["name"]: e for e in _container(objs)["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # kopf's peer identity
    kind, plural = (
        ("ClusterKopfPeering", "clusterkopfpeerings") if cluster_wide else ("KopfPeering", "kopfpeerings")
    )
    crd = _one(objs, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == f"{plural}.kopf.dev"
    assert crd["spec"]["names"]["kind"] == kind
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    peering = _one(objs, kind)
    assert peering["metadata"]["name"] == RELEASE
    assert peering["metadata"].get("namespace") == (None if cluster_wide else NAMESPACE)
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    role = _one(objs, "ClusterRole" if cluster_wide else "Role")
    assert _rules(role)[("kopf.dev", plural)] == {"list", "watch", "patch"}


def test_one_replica_is_standalone_and_never_overlaps_a_rollout():
    objs = template()
    assert _one(objs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not [o for o in objs if o["kind"] in ("CustomResourceDefinition", "KopfPeering")]
    assert not any(r[0] == "kopf.dev" for r in _rules(_one(objs, "Role")))


# --------------------------------------------------------------------------------- Deployment, Service


def test_deployment_is_hardened_probed_and_bounded():
    objs = template()
    pod = _one(objs, "Deployment")["spec"]["template"]["spec"]
    c = _container(objs)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsUser"] == 1000
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert (
        c["image"]
        == "ghcr.io/rlrun/rlrun-operator:" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    )
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] in ports, probe
    args = _cli(objs)
    assert (args.liveness_port, args.progress_port, args.metrics_port) == (
        ports["liveness"], ports["progress"], ports["metrics"])  # fmt: skip
    assert pod["serviceAccountName"] == OPERATOR


def test_progress_url_reaches_the_progress_port_through_the_service():
    objs = template()
    svc, pod_labels = (
        _one(objs, "Service"),
        _one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"],
    )
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    port = next(p for p in svc["spec"]["ports"] if p["name"] == "progress")
    assert _cli(objs).progress_url == f"http://{svc['metadata']['name']}.{NAMESPACE}.svc:{port['port']}"
    container_ports = {p["name"] for p in _container(objs)["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports


def test_operator_pod_never_looks_like_a_child_of_a_run():
    """list_children selects `name=rlrun,instance=<run>`: the operator's pod must never match it."""
    for obj in template({"podLabels": {"team": "ml"}}):
        labels = obj["metadata"].get("labels") or {}
        assert labels.get(names.LABEL_NAME) != names.APP_NAME, obj["kind"]
    pod_labels = _one(template(), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[names.LABEL_NAME] == "rlrun-operator"


# ----------------------------------------------------------------------------------------- monitoring


def test_monitors_select_the_operator_and_its_metrics_port():
    objs = template(VARIANTS["monitoring"])
    svc, deploy = _one(objs, "Service"), _one(objs, "Deployment")
    sm, pm = _one(objs, "ServiceMonitor"), _one(objs, "PodMonitor")
    assert sm["apiVersion"] == pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in _container(objs)["ports"]}
    assert sm["spec"]["namespaceSelector"] == pm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_monitors_are_off_by_default_and_need_metrics():
    assert not {"ServiceMonitor", "PodMonitor"} & set(_kinds(template()))
    objs = template(VARIANTS["no-metrics"])
    assert not {"ServiceMonitor", "PodMonitor"} & set(_kinds(objs))
    assert _cli(objs).metrics_port is None
    assert [p["name"] for p in _one(objs, "Service")["spec"]["ports"]] == ["progress"]


# --------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": 0}, "/replicaCount"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"rbac.clusterWide": "yes"}, "/rbac/clusterWide"),
        ({"ports.metrics": 70000}, "/ports/metrics"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
        ({"operator.intervalSeconds": 0}, "/operator/intervalSeconds"),
        ({"metrics.serviceMonitor.interval": "often"}, "/metrics/serviceMonitor/interval"),
        ({"replicas": 2}, "'replicas' not allowed"),  # a typo is an error, not a silently ignored key
    ],
)
def test_values_schema_rejects_bad_values(values, where):
    proc = helm("template", RELEASE, str(CHART), *set_args(values), check=False)
    assert proc.returncode != 0, f"{values} rendered"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert where in proc.stderr, proc.stderr


def test_notes_say_how_to_check_and_where_progress_goes():
    proc = helm("install", "--dry-run=client", RELEASE, str(CHART), "--namespace", NAMESPACE)
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{OPERATOR}" in notes
    assert f"http://{OPERATOR}.{NAMESPACE}.svc:8081" in notes
    assert f"It watches RLRuns in: {NAMESPACE}" in notes


# ---------------------------------------------------------------------------------------------- drift


def test_chart_installs_the_generated_crd():
    """The chart's crds/ is the API generator's output (its own drift test keeps the file current)."""
    shown = [d for d in yaml.safe_load_all(helm("show", "crds", str(CHART)).stdout) if d]
    assert shown == [yaml.safe_load(crd_yaml())]


def test_manifests_are_the_chart_rendered_with_defaults():
    for name, text in manifest_files().items():
        path = MANIFESTS / name
        assert path.exists() and path.read_text() == text, (
            f"{path} is stale: regenerate with `.venv/bin/python tests/unit/ship/chart.py`"
        )
    owned = {p.name for p in MANIFESTS.glob("*.yaml")}
    assert owned == set(manifest_files()), f"unexpected files in manifests/: {owned - set(manifest_files())}"


def test_manifests_hold_the_namespace_rbac_and_operator_without_helm_traces():
    docs = [d for p in sorted(MANIFESTS.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert [d["kind"] for d in docs] == [
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "Service", "Deployment"]  # fmt: skip
    assert {d["metadata"].get("namespace", NAMESPACE) for d in docs} == {NAMESPACE}
    text = "".join(p.read_text() for p in MANIFESTS.glob("*.yaml"))
    assert "helm.sh" not in text and "Helm" not in text
    assert "app.kubernetes.io/managed-by" not in text
