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
ATTEMPT_ENV = "RLRUN_ATTEMPT"
"""The restart attempt a Job's pods belong to; the orchestrator's progress reports carry it."""
PROGRESS_URL_ENV = "RLRUN_PROGRESS_URL"
PROGRESS_TOKEN_ENV = "RLRUN_PROGRESS_TOKEN"
"""Where and with which bearer token the orchestrator pushes progress to the operator."""
MASTER_ADDR_ENV = "MASTER_ADDR"
MASTER_PORT_ENV = "MASTER_PORT"
NNODES_ENV = "NNODES"
NODE_RANK_ENV = "NODE_RANK"
NPROC_PER_NODE_ENV = "NPROC_PER_NODE"
"""torchrun's wiring on trainer pods (expanded into its flags by the kubelet)."""

WIRED_ENV = (
    RUN_ID_ENV,
    ASSET_ROOT_ENV,
    CONFIG_ENV,
    COMPONENT_ENV,
    INFERENCE_URLS_ENV,
    ENV_WORKER_URLS_ENV,
    PORT_ENV,
    ATTEMPT_ENV,
    PROGRESS_URL_ENV,
    PROGRESS_TOKEN_ENV,
    MASTER_ADDR_ENV,
    MASTER_PORT_ENV,
    NNODES_ENV,
    NODE_RANK_ENV,
    NPROC_PER_NODE_ENV,
)
"""Every variable the operator wires; `spec.env` may not override them."""

# ----------------------------------------------------------------------------------------- ports
INFERENCE_PORT = 8000
ENV_WORKER_PORT = 8100
ORCHESTRATOR_PORT = 8200
TRAINER_MASTER_PORT = 29500

# ----------------------------------------------------------------------------------------- paths
DATA_MOUNT = "/data"
ASSET_ROOT = "/data/outputs"
CONFIG_MOUNT = "/etc/rlrun"
CONFIG_KEY = "config.json"
CONFIG_PATH = f"{CONFIG_MOUNT}/{CONFIG_KEY}"
HF_HOME = "/data/cache/huggingface"
