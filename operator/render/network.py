"""`<run>-net`: only pods of this run reach its pods (rendezvous, ZMQ, HTTP); the operator may also reach
the orchestrator's status endpoint, and any pod of the cluster (Prometheus, wherever it runs) the `metrics`
port, which serves figures only."""

from __future__ import annotations

from rlrun import pod_contract
from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render.common import Manifest, metadata, run_name

OPERATOR_APP = "rlrun-operator"
"""`app.kubernetes.io/name` of the operator's pods (in any namespace)."""


def render_network(run: RLRun) -> list[Manifest]:
    run_pods = {names.LABEL_NAME: names.APP_NAME, names.LABEL_INSTANCE: run_name(run)}
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(run, names.SUFFIX_NETWORK, names.COMPONENT_NETWORK),
            "spec": {
                "podSelector": {"matchLabels": run_pods},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": run_pods}}]},
                    {
                        "from": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {names.LABEL_NAME: OPERATOR_APP}},
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": names.ORCHESTRATOR_PORT}],
                    },
                    {
                        "from": [{"namespaceSelector": {}}],
                        "ports": [{"protocol": "TCP", "port": pod_contract.METRICS_PORT}],
                    },
                ],
            },
        }
    ]
