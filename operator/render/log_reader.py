"""A log-reader pod: reads a run's logs from its volume after the pods that wrote them are gone.

Every role's output is also on the run volume (`logs/attempt-<n>/<component>-<pod>.log`, runtime/podlog.py),
but nothing outside the cluster can read that volume, and a failed attempt's pods (with their kubelet logs)
are deleted. `rlrun logs --attempt N` (rlrun.client.Client.logs) therefore starts this pod: the runtime
image's `rlrun-podlog read` over the run's claim mounted read-only, then reads the pod's own log.

It is not a child of the reconcile: it does not carry the run's instance label (the operator neither
observes nor prunes it), but it is owned by the RLRun, so it goes with the run even when the client that
made it died before deleting it, and `activeDeadlineSeconds` bounds it. No network, no token, non-root.
"""

from __future__ import annotations

from typing import Any

from rlrun import pod_contract
from rlrun.operator import names
from rlrun.operator.api import RLRun, to_runtime_config
from rlrun.operator.render.common import (
    CONTAINER_SECURITY,
    DATA_VOLUME,
    POD_SECURITY,
    Manifest,
    claim_name,
    owner_reference,
)

COMPONENT = "log-reader"
LABEL_READS = f"{names.GROUP}/log-reader-of"
"""The run whose logs a reader pod reads (not the instance label: the operator's children carry that)."""
RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def render_log_reader(
    run: RLRun, component: str, attempt: int | None, *, pod_name: str, deadline_seconds: int
) -> Manifest:
    """The reader pod `pod_name` printing `component`'s logs of `attempt` (None: the newest attempt)."""
    run_dir = to_runtime_config(run.metadata.name, run.spec).run_dir
    command = [*pod_contract.LOG_READER, "--run-dir", str(run_dir), "--component", component]
    if attempt is not None:
        command += ["--attempt", str(int(attempt))]
    meta: dict[str, Any] = {
        "name": pod_name,
        "labels": {
            names.LABEL_NAME: f"{names.APP_NAME}-{COMPONENT}",
            names.LABEL_PART_OF: names.APP_NAME,
            LABEL_READS: run.metadata.name,
        },
    }
    if run.metadata.namespace:
        meta["namespace"] = run.metadata.namespace
    if run.metadata.uid:
        meta["ownerReferences"] = [{**owner_reference(run), "controller": False, "blockOwnerDeletion": False}]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY,
        "containers": [
            {
                "name": COMPONENT,
                "image": run.spec.images.runtime,
                "imagePullPolicy": run.spec.images.pull_policy,
                "command": command,
                "resources": RESOURCES,
                "volumeMounts": [{"name": DATA_VOLUME, "mountPath": names.DATA_MOUNT, "readOnly": True}],
                "securityContext": CONTAINER_SECURITY,
            }
        ],
        "volumes": [
            {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": claim_name(run), "readOnly": True}}
        ],
    }
    if run.spec.images.pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in run.spec.images.pull_secrets]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
