"""The chart's monitoring of the runs themselves: a PodMonitor that finds every run pod's `metrics` port
(checked against pods the operator really renders) and the Grafana dashboard, whose every query must name
metrics that exist, in the runtime's one metrics module or the operator's registry."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from chart import NAMESPACE, template
from prometheus_client import REGISTRY

import rlrun.operator.namespaces
import rlrun.operator.reconciler  # noqa: F401  (registers the operator's metrics)
from rlrun import pod_contract
from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render import render_children
from rlrun.runtime import metrics

ON = {"runMonitoring.podMonitor.enabled": True, "runMonitoring.dashboard.enabled": True}


def _of(objs: list[dict[str, Any]], kind: str, suffix: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]


def _dashboard(values: dict[str, Any] | None = None) -> dict[str, Any]:
    (cm,) = _of(template({**ON, **(values or {})}), "ConfigMap", "-dashboard")
    return json.loads(cm["data"]["rlrun-runs.json"])


def _queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return exprs + [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]


def _names_in(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in re.findall(r"\brlrun_[a-z0-9_]+", expr)}


def _operator_names() -> set[str]:
    """What the operator's modules registered (the runtime's too: one registry per process)."""
    return metrics.sample_names(REGISTRY.collect())


def test_run_monitoring_is_off_by_default() -> None:
    objs = template()
    assert not _of(objs, "PodMonitor", "-runs") and not _of(objs, "ConfigMap", "-dashboard")


def test_the_pod_monitor_scrapes_the_metrics_port_of_every_pod_a_run_renders() -> None:
    run = RLRun.model_validate(
        {"metadata": {"name": "demo", "namespace": NAMESPACE, "uid": "u1"}, "spec": {}}
    )
    (pm,) = _of(template(ON), "PodMonitor", "-runs")
    selector = pm["spec"]["selector"]["matchLabels"]
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    pods = [
        c["spec"]["template"]
        for c in render_children(run)
        if c["kind"] in ("Deployment", "StatefulSet", "Job")
    ]
    assert len(pods) == 4
    for pod in pods:
        assert selector.items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}[endpoint["port"]]
        assert port == pod_contract.METRICS_PORT
    meta = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert meta == {  # Kubernetes SD spells pod label names with '_' for every other character
        "run": ["__meta_kubernetes_pod_label_" + re.sub(r"\W", "_", names.LABEL_INSTANCE)],
        "component": ["__meta_kubernetes_pod_label_" + re.sub(r"\W", "_", names.LABEL_COMPONENT)],
    }
    assert pm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


@pytest.mark.parametrize(
    ("values", "selector"),
    [
        ({"watchNamespaces": ["team-a", "team-b"]}, {"matchNames": ["team-a", "team-b"]}),
        ({"rbac.clusterWide": True}, {"any": True}),
    ],
)
def test_the_pod_monitor_looks_where_the_operator_watches(values, selector) -> None:
    (pm,) = _of(template({**ON, **values}), "PodMonitor", "-runs")
    assert pm["spec"]["namespaceSelector"] == selector


def test_the_dashboard_configmap_carries_the_sidecar_label() -> None:
    (cm,) = _of(template({**ON, "runMonitoring.dashboard.namespace": "grafana"}), "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "grafana"
    titles = " | ".join(p["title"] for p in _dashboard()["panels"]).lower()
    for topic in ("reward", "step time", "policy lag", "restarts", "mismatch", "throughput per role"):
        assert topic in titles


def test_every_dashboard_query_names_a_metric_that_exists() -> None:
    used = _names_in(_queries(_dashboard()))
    known = metrics.metric_names() | _operator_names()
    assert used and used <= known, f"the dashboard queries metrics nobody exports: {sorted(used - known)}"
    assert "rlrun_run_restarts" in used  # the operator's restart mirror is charted too
    assert "rlrun_trainer_startup_seconds" in used  # and its start-up mirror


def test_every_runtime_metric_is_charted() -> None:
    used = _names_in(_queries(_dashboard()))
    families = {name.removesuffix("_total").removesuffix("_bucket") for name in used}
    uncharted = {m for m in metrics.metric_names() if m.removesuffix("_total") not in families}
    uncharted = {m for m in uncharted if not m.endswith(("_sum", "_count", "_bucket"))}
    assert not uncharted, f"metrics the dashboard does not show: {sorted(uncharted)}"
