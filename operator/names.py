"""Names shared by the API, the renderers and the operator: group/version/plural, label keys, child
name templates, ports, and the longest run name those templates allow.

Keeping them in one module means the CRD, every rendered child and the reconcile code agree on a label
key or a Service name by construction, not by copy-paste.
"""

from __future__ import annotations

from rlrun import pod_contract

GROUP = "rlrun.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RLRun"
PLURAL = "rlruns"
SINGULAR = "rlrun"
SHORT_NAMES = ("rlr",)
CATEGORIES = ("rlrun", "all")
CRD_NAME = f"{PLURAL}.{GROUP}"

FIELD_MANAGER = "rlrun-operator"
"""Server-side apply field manager of everything the operator writes."""

# ------------------------------------------------------------------------------------------ labels
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
APP_NAME = "rlrun"
LABEL_TRAINER_ATTEMPT = f"{GROUP}/trainer-attempt"
"""On the trainer Job and its pods: which group restart attempt they belong to."""
LABEL_ORCHESTRATOR_ATTEMPT = f"{GROUP}/orchestrator-attempt"
"""On the orchestrator Job and its pods: which restart attempt they belong to."""
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
"""On pod templates: hash of the runtime config, so a config change rolls the pods."""
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
"""Set by the Job controller on Indexed Job pods: the trainer pod's torchrun node rank."""
RESERVED_LABEL_PREFIXES = ("app.kubernetes.io/", f"{GROUP}/")
"""Label prefixes the operator owns; `spec.podLabels` may not use them."""

# -------------------------------------------------------------------------------------- components
COMPONENT_STORAGE = "storage"
COMPONENT_CONFIG = "config"
COMPONENT_INFERENCE = "inference"
COMPONENT_ENV_WORKERS = "env-workers"
COMPONENT_ORCHESTRATOR = "orchestrator"
COMPONENT_TRAINER = "trainer"
COMPONENT_NETWORK = "network"

# Child name = f"{run}{suffix}".
SUFFIX_ASSETS = "-assets"
SUFFIX_CONFIG = "-config"
SUFFIX_INFERENCE = "-inference"
SUFFIX_ENV_WORKERS = "-envs"
SUFFIX_ORCHESTRATOR = "-orchestrator"
SUFFIX_TRAINER = "-trainer"
SUFFIX_NETWORK = "-net"
SUFFIX_PROGRESS = "-progress"
"""The Secret holding the bearer token the orchestrator presents to the progress endpoint."""
PROGRESS_TOKEN_KEY = "token"
PROGRESS_PATH = "/v1/namespaces/{namespace}/rlruns/{name}/progress"
"""Route of the operator's progress endpoint; the orchestrator gets `<operator URL><this>`."""

MAX_TRAINER_NODES = 1024
"""Upper bound of spec.trainer.nodes; it fixes how many digits a trainer pod hostname may carry."""
MAX_INFERENCE_REPLICAS = 256
"""Upper bound of spec.inference.replicas; it fixes how many digits an inference pod hostname may carry."""
STATEFULSET_NAME_MAX = 52
"""Longest StatefulSet name whose pods can be created: the controller labels each pod
`controller-revision-hash: <name>-<hash of up to 10 chars>`, and a label value is at most 63 characters."""

DNS_LABEL_MAX = 63
LONGEST_NAME_SUFFIX = max(
    SUFFIX_ASSETS,
    SUFFIX_CONFIG,
    SUFFIX_INFERENCE,
    SUFFIX_ENV_WORKERS,
    SUFFIX_ORCHESTRATOR,
    SUFFIX_NETWORK,
    SUFFIX_PROGRESS,
    # Indexed Job and StatefulSet pods get the hostname <workload>-<index>; it must be a DNS label too.
    f"{SUFFIX_TRAINER}-{MAX_TRAINER_NODES - 1}",
    f"{SUFFIX_INFERENCE}-{MAX_INFERENCE_REPLICAS - 1}",
    key=len,
)
MAX_RUN_NAME_LENGTH = min(
    DNS_LABEL_MAX - len(LONGEST_NAME_SUFFIX), STATEFULSET_NAME_MAX - len(SUFFIX_INFERENCE)
)
"""Longest RLRun name whose every child name (Services, pod hostnames, label values) stays a DNS label
and whose inference StatefulSet can create its pods."""
RUN_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""DNS-1035 label: Service names derive from the run name, and Services require this form."""

# ------------------------------------------------------------------------------------------- pods
DATA_MOUNT = pod_contract.DATA_MOUNT
ASSET_ROOT = pod_contract.ASSET_ROOT
CONFIG_MOUNT = pod_contract.CONFIG_MOUNT
CONFIG_KEY = pod_contract.CONFIG_KEY
CONFIG_PATH = pod_contract.CONFIG_PATH
HF_HOME = pod_contract.HF_HOME
RUN_AS_USER = 1000

INFERENCE_PORT = pod_contract.INFERENCE_PORT
ENV_WORKER_PORT = pod_contract.ENV_WORKER_PORT
ORCHESTRATOR_PORT = pod_contract.ORCHESTRATOR_PORT
TRAINER_MASTER_PORT = pod_contract.TRAINER_MASTER_PORT
GPU_RESOURCE = "nvidia.com/gpu"

NATIVE_THREAD_ENV: tuple[tuple[str, str], ...] = (
    ("OMP_NUM_THREADS", "1"),
    ("MKL_NUM_THREADS", "1"),
    ("OPENBLAS_NUM_THREADS", "1"),
    ("NUMEXPR_NUM_THREADS", "1"),
    ("OMP_THREAD_LIMIT", "1"),
    ("RAYON_NUM_THREADS", "1"),
    ("OMP_DYNAMIC", "FALSE"),
    ("MKL_DYNAMIC", "FALSE"),
    ("MALLOC_ARENA_MAX", "2"),
    ("TOKENIZERS_PARALLELISM", "false"),
)
"""SEED-SPEC §13: caps that keep image processing from spawning core-count-wide thread teams."""

RESERVED_ENV = pod_contract.WIRED_ENV
"""Env names the renderers and the operator set (the pod contract, see render/common.py); `spec.env` may
not override them (it would break the wiring)."""


def child_name(run: str, suffix: str) -> str:
    return f"{run}{suffix}"


def inference_replica_host(run: str, index: int, namespace: str | None) -> str:
    """Stable DNS name of inference pod `index`: StatefulSet pod `<run>-inference-<i>` under the headless
    Service `<run>-inference` (the Service's namespace when known, else the pod's search path)."""
    sts = child_name(run, SUFFIX_INFERENCE)
    host = f"{sts}-{index}.{sts}"
    return f"{host}.{namespace}.svc" if namespace else host


def inference_replica_urls(run: str, replicas: int, namespace: str | None) -> list[str]:
    """Base URL of every inference replica, in ordinal order: each is reloaded and routed to on its own
    (one load-balanced name would reload one replica and leave the others serving a stale policy)."""
    return [f"http://{inference_replica_host(run, i, namespace)}:{INFERENCE_PORT}" for i in range(replicas)]


def trainer_master_addr(run: str) -> str:
    """Stable DNS name of trainer pod 0 through the headless Service (Indexed Job hostname + subdomain)."""
    trainer = child_name(run, SUFFIX_TRAINER)
    return f"{trainer}-0.{trainer}"
