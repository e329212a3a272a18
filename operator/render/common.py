"""Building blocks shared by the per-component renderers: metadata, labels, the pod template every
component starts from (env, mounts, security, scheduling) and Services.

Everything here is a pure function of the RLRun: no I/O, no clock, no randomness, so the same RLRun
always renders byte-identical children and server-side apply sees no change when nothing changed.

The pod contract: what each container is started with and what the runtime role reads from it. Pods
need no port or peer flags; each role's `settings_from(argv, environ)` resolves them from this env, and
tests/unit/operator/test_pod_contract.py checks every rendered container against it.

| Variable / argv             | Set on                | Read by                                                   |
|-----------------------------|-----------------------|-----------------------------------------------------------|
| RUN_ID, RLRUN_ASSET_ROOT    | every container       | RuntimeConfig.load (override the ConfigMap's values)      |
| RLRUN_CONFIG                | every container       | RuntimeConfig.load: /etc/rlrun/config.json (ConfigMap)    |
| RLRUN_COMPONENT             | every container       | nobody in the runtime: the role's name, for logs/metrics  |
| RLRUN_PORT                  | inference, env-workers, orchestrator | listen port (inference 8000, env-workers 8100, orchestrator status 8200); the Service targets it by name `http` |
| RLRUN_METRICS_PORT          | every container       | every role: Prometheus /metrics on 9400, container port `metrics` (the chart's PodMonitor) |
| RLRUN_INFERENCE_URLS        | every container       | env-workers, orchestrator, trainer (comma-separated, one URL per inference replica: names.inference_replica_urls) |
| RLRUN_ENV_WORKER_URLS       | every container       | orchestrator (comma-separated)                            |
| RLRUN_ATTEMPT               | Jobs (operator stamps) | orchestrator: the attempt its progress reports carry      |
| RLRUN_PROGRESS_URL, _TOKEN  | orchestrator Job      | orchestrator: POST {operator}/v1/namespaces/<ns>/rlruns/<run>/progress |
| MASTER_ADDR/PORT, NNODES, NPROC_PER_NODE, NODE_RANK | trainer | torchrun flags via $(VAR) expansion; torch reads the rest |
| RLRUN_POD_NAME              | every container       | rlrun-podlog: the pod's log file `logs/attempt-<n>/<component>-<pod>.log` |
| command                     | `rlrun-podlog --` (runtime/podlog.py: output also to the volume), then: inference (CPU) `rlrun-inference`, vLLM `/opt/vllm/bin/python -m rlrun.runtime.inference.vllm_server` + vLLM args; env-workers `rlrun-env-worker`; orchestrator `rlrun-orchestrator`; trainer `torchrun ... -m rlrun.runtime.trainer` |
"""

from __future__ import annotations

import hashlib
from typing import Any

from rlrun import pod_contract
from rlrun.operator import names
from rlrun.operator.api import PodScheduling, ResourceRequirements, RLRun, RLRunSpec, to_runtime_config

Manifest = dict[str, Any]

DATA_VOLUME = "data"
CONFIG_VOLUME = "config"
SHM_VOLUME = "dshm"


def run_name(run: RLRun) -> str:
    return run.metadata.name


def selector_labels(run: RLRun, component: str) -> dict[str, str]:
    """The labels a Service/Deployment selects on: stable for the whole run (selectors are immutable)."""
    return {
        names.LABEL_NAME: names.APP_NAME,
        names.LABEL_INSTANCE: run_name(run),
        names.LABEL_COMPONENT: component,
    }


def standard_labels(run: RLRun, component: str) -> dict[str, str]:
    return {**selector_labels(run, component), names.LABEL_MANAGED_BY: names.FIELD_MANAGER}


def owner_reference(run: RLRun) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": run_name(run),
        "uid": run.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(run: RLRun, suffix: str, component: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Child metadata. The ownerReference needs the RLRun's uid, so a file that never went through the
    API server (`rlrun render` of an example) renders children without one."""
    meta: dict[str, Any] = {
        "name": names.child_name(run_name(run), suffix),
        "labels": {**standard_labels(run, component), **(labels or {})},
    }
    if run.metadata.namespace:
        meta["namespace"] = run.metadata.namespace
    if run.metadata.uid:
        meta["ownerReferences"] = [owner_reference(run)]
    return meta


def runtime_config_json(run: RLRun) -> str:
    return to_runtime_config(run_name(run), run.spec).to_json()


def config_hash(run: RLRun) -> str:
    return hashlib.sha256(runtime_config_json(run).encode()).hexdigest()[:16]


def service_url(run: RLRun, suffix: str, port: int) -> str:
    return f"http://{names.child_name(run_name(run), suffix)}:{port}"


def base_env(run: RLRun, component: str) -> list[dict[str, Any]]:
    """Env of every container: identity, config path, peer URLs, native-thread caps, then the user's."""
    env: list[dict[str, Any]] = [
        {"name": pod_contract.RUN_ID_ENV, "value": run_name(run)},
        {"name": pod_contract.ASSET_ROOT_ENV, "value": names.ASSET_ROOT},
        {"name": pod_contract.CONFIG_ENV, "value": names.CONFIG_PATH},
        {"name": pod_contract.COMPONENT_ENV, "value": component},
        {
            "name": pod_contract.INFERENCE_URLS_ENV,
            "value": ",".join(
                names.inference_replica_urls(
                    run_name(run), run.spec.inference.replicas, run.metadata.namespace
                )
            ),
        },
        {
            "name": pod_contract.ENV_WORKER_URLS_ENV,
            "value": service_url(run, names.SUFFIX_ENV_WORKERS, names.ENV_WORKER_PORT),
        },
        {"name": "HF_HOME", "value": names.HF_HOME},
    ]
    env += [{"name": k, "value": v} for k, v in names.NATIVE_THREAD_ENV]
    env += [e.model_dump(by_alias=True, exclude_none=True) for e in run.spec.env]
    return env


def resources(spec: ResourceRequirements, gpus: int) -> dict[str, Any]:
    """Requests/limits from the spec plus `gpus` GPUs (GPUs must be equal in requests and limits)."""
    requests: dict[str, Any] = dict(spec.requests)
    limits: dict[str, Any] = dict(spec.limits)
    if gpus:
        requests[names.GPU_RESOURCE] = gpus
        limits[names.GPU_RESOURCE] = gpus
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": names.RUN_AS_USER,
    "runAsGroup": names.RUN_AS_USER,
    "fsGroup": names.RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def container(
    run: RLRun,
    component: str,
    *,
    image: str,
    command: list[str],
    args: list[str] | None = None,
    ports: list[tuple[str, int]] = (),
    spec_resources: ResourceRequirements,
    gpus: int = 0,
    extra_env: list[dict[str, Any]] = (),
    shm: bool = False,
) -> dict[str, Any]:
    """The one container of a component's pod, with the run's env, mounts and security context."""
    mounts = [
        {"name": DATA_VOLUME, "mountPath": names.DATA_MOUNT},
        {"name": CONFIG_VOLUME, "mountPath": names.CONFIG_MOUNT, "readOnly": True},
    ]
    if shm:
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    c: dict[str, Any] = {
        "name": component,
        "image": image,
        "imagePullPolicy": run.spec.images.pull_policy,
        # Through the log wrapper: the role's output also lands on the run volume, per attempt and pod.
        "command": [*pod_contract.LOG_WRAPPER, *command],
    }
    if args:
        c["args"] = args
    ports = [*ports, (pod_contract.METRICS_PORT_NAME, pod_contract.METRICS_PORT)]
    c["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]
    metrics_env = {"name": pod_contract.METRICS_PORT_ENV, "value": str(pod_contract.METRICS_PORT)}
    pod_name_env = {
        "name": pod_contract.POD_NAME_ENV,
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    c["env"] = [*base_env(run, component), metrics_env, pod_name_env, *extra_env]
    if run.spec.env_from:
        c["envFrom"] = list(run.spec.env_from)
    c["resources"] = resources(spec_resources, gpus)
    c["volumeMounts"] = mounts
    # A failed container's last log lines become its termination message, which the operator puts in
    # the restart Event and status before the pod is deleted (no pods/log permission needed).
    c["terminationMessagePolicy"] = "FallbackToLogsOnError"
    c["securityContext"] = CONTAINER_SECURITY
    return c


def claim_name(run: RLRun) -> str:
    """The run volume: `storage.existingClaim`, else a fork's parent's volume (shared: it holds the
    parent's run directory and checkpoint), else the run's own `<run>-assets`."""
    fork = run.spec.resume_from
    return run.spec.storage.existing_claim or names.child_name(
        fork.run if fork else run_name(run), names.SUFFIX_ASSETS
    )


def pod_template(
    run: RLRun,
    component: str,
    main: dict[str, Any],
    scheduling: PodScheduling,
    *,
    restart_policy: str = "Always",
    labels: dict[str, str] | None = None,
    shm: bool = False,
    extra_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod template: labels (standard + podLabels), config-hash annotation, volumes, scheduling."""
    volumes: list[dict[str, Any]] = [
        {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": claim_name(run)}},
        {
            "name": CONFIG_VOLUME,
            "configMap": {"name": names.child_name(run_name(run), names.SUFFIX_CONFIG)},
        },
    ]
    if shm:
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY,
        "containers": [main],
        "volumes": volumes,
    }
    if run.spec.service_account_name:
        spec["serviceAccountName"] = run.spec.service_account_name
    if run.spec.images.pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in run.spec.images.pull_secrets]
    if scheduling.node_selector:
        spec["nodeSelector"] = dict(scheduling.node_selector)
    if scheduling.tolerations:
        spec["tolerations"] = list(scheduling.tolerations)
    if scheduling.affinity:
        spec["affinity"] = scheduling.affinity
    if scheduling.priority_class_name:
        spec["priorityClassName"] = scheduling.priority_class_name
    spec.update(extra_spec or {})
    return {
        "metadata": {
            "labels": {**run.spec.pod_labels, **standard_labels(run, component), **(labels or {})},
            "annotations": {**run.spec.pod_annotations, names.ANNOTATION_CONFIG_HASH: config_hash(run)},
        },
        "spec": spec,
    }


def service(
    run: RLRun, suffix: str, component: str, ports: list[tuple[str, int]], *, headless: bool = False
) -> Manifest:
    spec: dict[str, Any] = {
        "selector": selector_labels(run, component),
        "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in ports],
    }
    if headless:
        # Trainer ranks resolve each other before they are Ready (the rendezvous is what makes them ready);
        # inference replicas are reloaded and probed for their served version before they are Ready.
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = True
    else:
        spec["type"] = "ClusterIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(run, suffix, component), "spec": spec}


def queued(spec: RLRunSpec, component: str) -> bool:
    """THE Kueue rule: with `spec.queueName`, only the trainer Job (the GPU gang) is queued."""
    return bool(spec.queue_name) and component == names.COMPONENT_TRAINER


def job_suspend(run: RLRun, component: str) -> bool:
    """`suspend` a Job is created with: true while the run is suspended, and true for a queued Job (Kueue
    admits it by resuming it; the operator never resumes a queued Job)."""
    return run.spec.suspend or queued(run.spec, component)


def job_labels(run: RLRun, component: str) -> dict[str, str]:
    if queued(run.spec, component):
        return {names.LABEL_KUEUE_QUEUE: run.spec.queue_name or ""}
    return {}


def attempt_env(attempt: int) -> dict[str, str]:
    """RLRUN_ATTEMPT: which restart attempt a Job's pods belong to (progress reports carry it)."""
    return {"name": pod_contract.ATTEMPT_ENV, "value": str(attempt)}
