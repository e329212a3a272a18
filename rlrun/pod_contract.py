"""The pod contract: what a container of a run is started with, named once for both sides.

The operator's renderers set these variables, ports and paths on every pod; each runtime role reads them
back (`settings_from(argv, environ)`). Both import this module, so an env name or a default port cannot
drift between the side that writes it and the side that reads it. It sits outside `rlrun.operator` and
`rlrun.runtime` so that either may import it (tests/unit/test_layering.py). Pure constants, no imports.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------- env
RUN_ID_ENV = "RUN_ID"
"""The RLRun name: the run id every role writes under (overrides the ConfigMap's value)."""
ASSET_ROOT_ENV = "RLRUN_ASSET_ROOT"
CONFIG_ENV = "RLRUN_CONFIG"
"""Path of the runtime config JSON (the ConfigMap, mounted read-only)."""
COMPONENT_ENV = "RLRUN_COMPONENT"
"""The role's name, for logs and metrics."""
PORT_ENV = "RLRUN_PORT"
"""The listen port of inference, env-workers and the orchestrator's status endpoint."""
INFERENCE_URLS_ENV = "RLRUN_INFERENCE_URLS"
ENV_WORKER_URLS_ENV = "RLRUN_ENV_WORKER_URLS"
"""Comma-separated base URLs of the peers (the components' Services)."""
METRICS_PORT_ENV = "RLRUN_METRICS_PORT"
METRICS_HOST_ENV = "RLRUN_METRICS_HOST"
"""Where a role serves Prometheus /metrics (unset port: it serves none; host defaults to 0.0.0.0)."""
ATTEMPT_ENV = "RLRUN_ATTEMPT"
"""The restart attempt a Job's pods belong to; the orchestrator's progress reports carry it."""
POD_NAME_ENV = "RLRUN_POD_NAME"
"""The pod's own name (downward API): names its log file on the run volume (runtime/podlog.py)."""
PROGRESS_URL_ENV = "RLRUN_PROGRESS_URL"
PROGRESS_TOKEN_ENV = "RLRUN_PROGRESS_TOKEN"
"""Where and with which bearer token the orchestrator pushes progress to the operator."""
PACKAGE_INDEX_USERNAME_ENV = "RLRUN_PACKAGE_INDEX_USERNAME"
PACKAGE_INDEX_PASSWORD_ENV = "RLRUN_PACKAGE_INDEX_PASSWORD"
"""Env-worker credentials for envWorkers.packages.indexUrl, from the Secret's `username` / `password` keys."""
TRACKING_SECRET_ENV = (
    "WANDB_API_KEY",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)
"""Keys of spec.tracking.credentialsSecret the orchestrator gets as env (each optional); never logged."""
MASTER_ADDR_ENV = "MASTER_ADDR"
MASTER_PORT_ENV = "MASTER_PORT"
NNODES_ENV = "NNODES"
NODE_RANK_ENV = "NODE_RANK"
NPROC_PER_NODE_ENV = "NPROC_PER_NODE"
"""torchrun's wiring on trainer pods (expanded into its flags by the kubelet)."""
TORCHRUN_SHUTDOWN_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
"""Seconds torchrun lets its ranks checkpoint after SIGTERM before it SIGKILLs them (trainer pods)."""

WIRED_ENV = (
    RUN_ID_ENV,
    ASSET_ROOT_ENV,
    CONFIG_ENV,
    COMPONENT_ENV,
    INFERENCE_URLS_ENV,
    ENV_WORKER_URLS_ENV,
    PORT_ENV,
    METRICS_PORT_ENV,
    METRICS_HOST_ENV,
    ATTEMPT_ENV,
    POD_NAME_ENV,
    PROGRESS_URL_ENV,
    PROGRESS_TOKEN_ENV,
    MASTER_ADDR_ENV,
    MASTER_PORT_ENV,
    NNODES_ENV,
    NODE_RANK_ENV,
    NPROC_PER_NODE_ENV,
    PACKAGE_INDEX_USERNAME_ENV,
    PACKAGE_INDEX_PASSWORD_ENV,
    TORCHRUN_SHUTDOWN_ENV,
)
"""Every variable the operator wires; `spec.env` may not override them."""

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
"""Kubernetes' default terminationMessagePath: what a process of the container writes there becomes the
terminated container's message, which the operator puts into the restart Event."""

LOG_WRAPPER = ("rlrun-podlog", "--")
"""Every container's command starts with this: the role's stdout/stderr also go to the run volume
(runtime/podlog.py), and signals reach the role through it."""
LOG_READER = ("rlrun-podlog", "read")
"""+ `--run-dir D --component C [--attempt N]`: prints those logs from the volume (a log-reader pod's
command). Its first line is `LOG_ATTEMPT_MARK <n>`; when there is none it prints `NO_LOGS_MARK <why>` to
stderr and exits NO_LOGS_EXIT."""
LOG_ATTEMPT_MARK = "rlrun-podlog: attempt"
NO_LOGS_MARK = "rlrun-podlog: NoLogs:"
NO_LOGS_EXIT = 3

# ----------------------------------------------------------------------------------------- ports
INFERENCE_PORT = 8000
ENV_WORKER_PORT = 8100
ORCHESTRATOR_PORT = 8200
TRAINER_MASTER_PORT = 29500
METRICS_PORT = 9400
METRICS_PORT_NAME = "metrics"
"""Every run pod serves its role's Prometheus metrics on this container port, named so for the PodMonitor."""

# ----------------------------------------------------------------------------------------- paths
DATA_MOUNT = "/data"
ASSET_ROOT = "/data/outputs"
CONFIG_MOUNT = "/etc/rlrun"
CONFIG_KEY = "config.json"
CONFIG_PATH = f"{CONFIG_MOUNT}/{CONFIG_KEY}"
HF_HOME = "/data/cache/huggingface"
