"""Env-workers: a CPU-only Deployment + Service; the orchestrator asks them for rollout groups."""

from __future__ import annotations

from rlrun import pod_contract
from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render.common import Manifest, container, metadata, pod_template, selector_labels, service

C = names.COMPONENT_ENV_WORKERS
PORTS = [("http", names.ENV_WORKER_PORT)]


def _index_credentials(secret: str | None) -> list[dict]:
    """envWorkers.packages.credentialsSecret's keys as env vars (read by runtime/envs/packages.py only)."""
    if secret is None:
        return []
    keys = {
        pod_contract.PACKAGE_INDEX_USERNAME_ENV: "username",
        pod_contract.PACKAGE_INDEX_PASSWORD_ENV: "password",
    }
    return [{"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for n, k in keys.items()]


def render_env_workers(run: RLRun) -> list[Manifest]:
    """Your environment's code comes from `envWorkers.image` (FROM the runtime image) or from
    `envWorkers.packages`, installed by the env-worker at start into a virtualenv on the run volume."""
    ew = run.spec.env_workers
    main = container(
        run,
        C,
        image=ew.image or run.spec.images.runtime,
        command=["rlrun-env-worker"],
        ports=PORTS,
        spec_resources=ew.resources,
        extra_env=[
            {"name": pod_contract.PORT_ENV, "value": str(names.ENV_WORKER_PORT)},
            *_index_credentials(ew.packages.credentials_secret),
        ],
    )
    main["readinessProbe"] = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(run, names.SUFFIX_ENV_WORKERS, C),
        "spec": {
            "replicas": 0 if run.spec.suspend else ew.replicas,
            "selector": {"matchLabels": selector_labels(run, C)},
            "template": pod_template(run, C, main, ew.scheduling),
        },
    }
    return [service(run, names.SUFFIX_ENV_WORKERS, C, PORTS), deployment]
