"""The orchestrator: a one-pod Job (its success ends the run) + a Service for its status endpoint.

backoffLimit 0 and restartPolicy Never: the operator, not the Job controller, decides and counts restarts.
"""

from __future__ import annotations

from typing import Any

from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render.common import (
    Manifest,
    container,
    job_labels,
    job_suspend,
    metadata,
    pod_template,
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


def render_orchestrator(run: RLRun) -> list[Manifest]:
    orch = run.spec.orchestrator
    main = container(
        run,
        C,
        image=run.spec.images.runtime,
        command=["rlrun-orchestrator"],
        ports=PORTS,
        spec_resources=orch.resources,
        extra_env=[{"name": "RLRUN_PORT", "value": str(names.ORCHESTRATOR_PORT)}, *upload_env(run)],
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(run, names.SUFFIX_ORCHESTRATOR, C, job_labels(run)),
        "spec": {
            **job_suspend(run),
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 0,
            "template": pod_template(run, C, main, orch.scheduling, restart_policy="Never"),
        },
    }
    return [service(run, names.SUFFIX_ORCHESTRATOR, C, PORTS), job]
