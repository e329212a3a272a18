"""The orchestrator: a one-pod Job (its success ends the run), a Service for its status endpoint, and the
Secret with the bearer token it pushes progress with.

backoffLimit 0 and restartPolicy Never: the operator, not the Job controller, decides and counts restarts.
The token is an input (the operator draws one for a run that has no Secret yet), so rendering stays pure.
"""

from __future__ import annotations

from typing import Any

from rlrun import pod_contract
from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render.common import (
    Manifest,
    attempt_env,
    container,
    job_labels,
    job_suspend,
    metadata,
    pod_template,
    run_name,
    service,
)

C = names.COMPONENT_ORCHESTRATOR
PORTS = [("http", names.ORCHESTRATOR_PORT)]
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def upload_env(run: RLRun) -> list[dict[str, Any]]:
    """S3 credentials from the sample-upload Secret; the orchestrator is the only pod that uploads."""
    secret = run.spec.sample_upload.credentials_secret
    if not secret:
        return []
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} for k in S3_KEYS]


def tracking_env(run: RLRun) -> list[dict[str, Any]]:
    """Tracking credentials from spec.tracking.credentialsSecret, each key optional (a W&B-only Secret has
    no MLflow keys); the orchestrator is the only pod that logs to the trackers."""
    secret = run.spec.tracking.credentials_secret
    if not secret:
        return []
    return [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k, "optional": True}}}
        for k in pod_contract.TRACKING_SECRET_ENV
    ]


def progress_env(run: RLRun, progress_url: str | None) -> list[dict[str, Any]]:
    """Where and with what token the orchestrator pushes progress (no URL: it only writes progress.json)."""
    secret = names.child_name(run_name(run), names.SUFFIX_PROGRESS)
    env: list[dict[str, Any]] = [
        {
            "name": pod_contract.PROGRESS_TOKEN_ENV,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": names.PROGRESS_TOKEN_KEY}},
        }
    ]
    if progress_url:
        path = names.PROGRESS_PATH.format(namespace=run.metadata.namespace or "default", name=run_name(run))
        env.append({"name": pod_contract.PROGRESS_URL_ENV, "value": progress_url.rstrip("/") + path})
    return env


def render_progress_secret(run: RLRun, token: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(run, names.SUFFIX_PROGRESS, C),
        "type": "Opaque",
        "stringData": {names.PROGRESS_TOKEN_KEY: token},
    }


def render_orchestrator(
    run: RLRun, *, attempt: int = 0, progress_url: str | None = None, progress_token: str | None = None
) -> list[Manifest]:
    """`progress_token` None leaves the Secret out (it exists already; its token is never rotated)."""
    orch = run.spec.orchestrator
    main = container(
        run,
        C,
        image=run.spec.images.runtime,
        command=["rlrun-orchestrator"],
        ports=PORTS,
        spec_resources=orch.resources,
        extra_env=[
            {"name": pod_contract.PORT_ENV, "value": str(names.ORCHESTRATOR_PORT)},
            *upload_env(run),
            *tracking_env(run),
            attempt_env(attempt),
            *progress_env(run, progress_url),
        ],
    )
    attempt_label = {names.LABEL_ORCHESTRATOR_ATTEMPT: str(attempt)}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(run, names.SUFFIX_ORCHESTRATOR, C, {**attempt_label, **job_labels(run, C)}),
        "spec": {
            "suspend": job_suspend(run, C),
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 0,
            "template": pod_template(
                run, C, main, orch.scheduling, restart_policy="Never", labels=attempt_label
            ),
        },
    }
    secret = [render_progress_secret(run, progress_token)] if progress_token is not None else []
    return [*secret, service(run, names.SUFFIX_ORCHESTRATOR, C, PORTS), job]
