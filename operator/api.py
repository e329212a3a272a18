"""The RLRun API (`rlrun.dev/v1alpha1`): spec and status as pydantic models, the single source of the CRD.

The runtime sections of `rlrun.runtime.config` are reused as they are (or subclassed to add the
Kubernetes-only knobs: resources, scheduling) so one YAML drives both `rlrun local` and the operator.

Cross-field rules live twice, on purpose: as CEL (`x-kubernetes-validations`, enforced by the API server,
so `kubectl apply` of a bad spec fails before anything is created) and as pydantic validators with the
same message (so `rlrun render` / `rlrun local` fail the same way with no API server). The admission
test table checks that both sides reject every invalid spec with the same message.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from rlrun.operator import names
from rlrun.runtime.config import (
    DEFAULT_ASSET_ROOT,
    EnvironmentConfig,
    EnvWorkersConfig,
    ModelConfig,
    MultimodalConfig,
    OrchestratorConfig,
    RuntimeConfig,
    SampleUploadConfig,
    Section,
    TrainerConfig,
    TransportConfig,
)

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
Quantity = int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=32)]
"""A Kubernetes resource quantity (`2`, `500m`, `16Gi`); rendered as x-kubernetes-int-or-string with the
pattern, so `cpu: many` is refused at admission (and offline), not later when a child is rejected."""
S = TypeVar("S", bound=Section)


def cel(rule: str, message: str, *, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry. Static messages only: a messageExpression that formats the
    values (string(int)) is estimated far over the CEL cost budget by the API server."""
    entry: dict[str, str] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


MSG_GPU_IN_RESOURCES = (
    "resources may not set nvidia.com/gpu: set trainer.gpusPerNode or inference.gpusPerReplica instead"
)
MSG_STORAGE_EXCLUSIVE = (
    "spec.storage.existingClaim and spec.storage.storageClassName are "
    "mutually exclusive: an existing claim already has its storage class"
)
MSG_TP = (
    "spec.inference.gpusPerReplica must be a multiple of "
    "spec.inference.tensorParallelSize (CPU inference, gpusPerReplica 0, needs "
    "tensorParallelSize 1): change one of them"
)
MSG_ENGINE_GPU = (
    "spec.inference.engine vllm on a cluster needs spec.inference.gpusPerReplica > 0: the runtime image "
    "installs vLLM's CUDA build (use engine rlrun for CPU pods; `rlrun local --engine vllm` runs vLLM's "
    "CPU build on this machine)"
)
MSG_PROCS = (
    "spec.trainer.processesPerNode must equal spec.trainer.gpusPerNode on GPU nodes "
    "(one rank per GPU): remove processesPerNode to get that default"
)
MSG_UPLOAD_BOTH = (
    "spec.sampleUpload.presignEndpoint and spec.sampleUpload.bucket are mutually "
    "exclusive: choose platform mode or S3 mode"
)
MSG_UPLOAD_CREDS = (
    "spec.sampleUpload.credentialsSecret is only used in S3 mode: "
    "set spec.sampleUpload.bucket or remove credentialsSecret"
)
MSG_BACKOFF = "spec.failurePolicy.backoffMaxSeconds must be >= spec.failurePolicy.backoffSeconds"


# ------------------------------------------------------------------------------- shared pieces


class ResourceRequirements(Section):
    """Container requests/limits (cpu, memory, ephemeral-storage, ...). GPUs come from the GPU counts."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"(!has(self.limits) || !('{names.GPU_RESOURCE}' in self.limits)) && "
                f"(!has(self.requests) || !('{names.GPU_RESOURCE}' in self.requests))",
                MSG_GPU_IN_RESOURCES,
            )
        )
    )

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _no_gpus(self) -> ResourceRequirements:
        if names.GPU_RESOURCE in self.limits or names.GPU_RESOURCE in self.requests:
            raise ValueError(MSG_GPU_IN_RESOURCES)
        return self


class PodScheduling(Section):
    """Where a component's pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict, max_length=64)
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, max_length=64, description="Pod tolerations (core/v1 Toleration objects)."
    )
    affinity: dict[str, Any] | None = Field(None, description="Pod affinity (a core/v1 Affinity object).")
    priority_class_name: str | None = Field(None, min_length=1, max_length=253)


class EnvVar(Section):
    """An extra environment variable for every container of the run."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = None
    value_from: dict[str, Any] | None = Field(None, description="A core/v1 EnvVarSource.")


# ------------------------------------------------------------------------------- spec sections


class ModelSpec(ModelConfig):
    """Which policy model to train and serve. Immutable once the run started."""

    name: str = Field(
        "builtin:tiny-qwen2-vl",
        min_length=1,
        max_length=512,
        description="A Hugging Face model id, an absolute path on the run volume, or "
        "'builtin:tiny-qwen2-vl' (a tiny random Qwen2-VL built offline, for CPU runs and tests).",
    )
    revision: str | None = Field(
        None, min_length=1, max_length=256, description="Model revision (branch, tag or commit) for hub ids."
    )


class ImagesSpec(Section):
    """Container images of the run."""

    runtime: str = Field(
        "ghcr.io/rlrun/runtime:0.1.0",
        min_length=1,
        max_length=512,
        description="Image for the trainer, orchestrator, env-workers and CPU inference.",
    )
    inference: str = Field(
        "ghcr.io/rlrun/inference:0.1.0",
        min_length=1,
        max_length=512,
        description="Image for GPU inference (vLLM with the rlrun extension).",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    pull_secrets: list[str] = Field(
        default_factory=list, max_length=16, description="Names of image pull Secrets in the run's namespace."
    )


class StorageSpec(Section):
    """The run volume mounted at /data in every pod (ReadWriteMany: every pod reads and writes it)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.existingClaim) && has(self.storageClassName))",
                MSG_STORAGE_EXCLUSIVE,
            )
        )
    )

    existing_claim: str | None = Field(
        None, min_length=1, max_length=253, description="Use this PVC instead of creating <run>-assets."
    )
    storage_class_name: str | None = Field(
        None, min_length=1, max_length=253, description="Storage class of the created PVC (must offer RWX)."
    )
    size: str = Field("50Gi", pattern=QUANTITY_PATTERN, max_length=32, description="Size of the created PVC.")

    @model_validator(mode="after")
    def _exclusive(self) -> StorageSpec:
        if self.existing_claim and self.storage_class_name:
            raise ValueError(MSG_STORAGE_EXCLUSIVE)
        return self


class InferenceSpec(Section):
    """The inference servers (vLLM on GPU, the rlrun CPU engine when gpusPerReplica is 0)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.gpusPerReplica == 0 ? self.tensorParallelSize == 1 : "
                "self.gpusPerReplica % self.tensorParallelSize == 0",
                MSG_TP,
            ),
            cel("!has(self.engine) || self.engine != 'vllm' || self.gpusPerReplica > 0", MSG_ENGINE_GPU),
        )
    )

    replicas: int = Field(1, ge=1, le=256, description="Inference server pods.")
    engine: Literal["vllm", "rlrun"] | None = Field(
        None,
        description="Inference engine: 'vllm', or 'rlrun' (the CPU engine, same API). Unset: vllm when "
        "gpusPerReplica > 0, else rlrun.",
    )
    gpus_per_replica: int = Field(0, ge=0, le=16, description="GPUs per server pod; 0 runs the CPU engine.")
    tensor_parallel_size: int = Field(1, ge=1, le=16, description="vLLM tensor parallel size.")
    extra_args: list[str] = Field(
        default_factory=list, max_length=64, description="Extra vLLM server arguments, appended verbatim."
    )
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    scheduling: PodScheduling = Field(default_factory=PodScheduling)

    @property
    def engine_name(self) -> Literal["vllm", "rlrun"]:
        """The engine that serves: `engine`, else vllm on GPUs and the rlrun CPU engine without."""
        return self.engine or ("vllm" if self.gpus_per_replica else "rlrun")

    @model_validator(mode="after")
    def _tp(self) -> InferenceSpec:
        tp, gpus = self.tensor_parallel_size, self.gpus_per_replica
        if (gpus == 0 and tp != 1) or (gpus and gpus % tp):
            raise ValueError(MSG_TP)
        if self.engine == "vllm" and not gpus:
            raise ValueError(MSG_ENGINE_GPU)
        return self


class TrainerSpec(Section):
    """The trainer: an Indexed Job of `nodes` pods, each running torchrun with `processesPerNode` ranks."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.gpusPerNode == 0 || !has(self.processesPerNode) || "
                "self.processesPerNode == self.gpusPerNode",
                MSG_PROCS,
            )
        )
    )

    nodes: int = Field(1, ge=1, le=names.MAX_TRAINER_NODES, description="Trainer pods (torchrun nodes).")
    gpus_per_node: int = Field(0, ge=0, le=16, description="GPUs per trainer pod; 0 is a CPU run (gloo).")
    processes_per_node: int | None = Field(
        None, ge=1, le=64, description="torchrun ranks per pod; default gpusPerNode, or 1 on CPU."
    )
    checkpoint_interval: int = Field(10, ge=1, description="Save a checkpoint every N steps.")
    micro_batch_size: int = Field(8, ge=1, description="Samples per micro-batch.")
    clip_epsilon: float = Field(0.2, gt=0, description="PPO-style clipping of the importance ratio.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient norm clip.")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    scheduling: PodScheduling = Field(default_factory=PodScheduling)

    @property
    def ranks_per_node(self) -> int:
        return self.processes_per_node or self.gpus_per_node or 1

    @model_validator(mode="after")
    def _procs(self) -> TrainerSpec:
        if self.gpus_per_node and self.processes_per_node and self.processes_per_node != self.gpus_per_node:
            raise ValueError(MSG_PROCS)
        return self


class OrchestratorSpec(OrchestratorConfig):
    """The orchestrator (one pod): the runtime settings plus its pod's resources and scheduling."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.batchSize % self.groupSize == 0",
                "orchestrator.batchSize must be a multiple of orchestrator.groupSize: "
                "batchSize = groupSize x prompts per step",
            )
        )
    )

    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    scheduling: PodScheduling = Field(default_factory=PodScheduling)


class EnvironmentSpec(EnvironmentConfig):
    id: str = Field(
        "color-codeword",
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Environment id: 'color-codeword', 'text-reverse', ...",
    )


class EnvWorkersSpec(EnvWorkersConfig):
    """The env-workers (a Deployment, CPU only)."""

    environment: EnvironmentSpec = Field(default_factory=EnvironmentSpec)
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    scheduling: PodScheduling = Field(default_factory=PodScheduling)


class SampleUploadSpec(SampleUploadConfig):
    """Sample logging; S3 mode reads its keys from the Secret `credentialsSecret`."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.enabled || has(self.presignEndpoint) || has(self.bucket)",
                "sampleUpload.enabled needs sampleUpload.presignEndpoint or sampleUpload.bucket",
            ),
            cel(
                "!(has(self.presignEndpoint) && has(self.bucket))",
                MSG_UPLOAD_BOTH,
            ),
            cel(
                "!has(self.credentialsSecret) || has(self.bucket)",
                MSG_UPLOAD_CREDS,
            ),
        )
    )

    presign_endpoint: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="Platform mode: POST here to get a presigned PUT URL for each file.",
    )
    bucket: str | None = Field(
        None, min_length=1, max_length=255, description="S3 mode: bucket to sign PUT URLs for."
    )
    credentials_secret: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, given to the orchestrator.",
    )

    @model_validator(mode="after")
    def _modes(self) -> SampleUploadSpec:
        if self.presign_endpoint and self.bucket:
            raise ValueError(MSG_UPLOAD_BOTH)
        if self.credentials_secret and not self.bucket:
            raise ValueError(MSG_UPLOAD_CREDS)
        return self


class FailurePolicy(Section):
    """Trainer-group and orchestrator restarts, owned and counted by the operator (Jobs never retry)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.backoffMaxSeconds >= self.backoffSeconds",
                MSG_BACKOFF,
            )
        )
    )

    max_restarts: int = Field(3, ge=0, le=1000, description="Restarts before the run is marked Failed.")
    backoff_seconds: int = Field(10, ge=0, le=86400, description="Delay before the first restart.")
    backoff_max_seconds: int = Field(300, ge=0, le=86400, description="Cap of the doubling restart delay.")

    @model_validator(mode="after")
    def _cap(self) -> FailurePolicy:
        if self.backoff_max_seconds < self.backoff_seconds:
            raise ValueError(MSG_BACKOFF)
        return self

    def backoff(self, restarts: int) -> int:
        """Seconds to wait before restart number `restarts + 1` (doubling, capped)."""
        return min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, restarts))


_reserved_env = ", ".join(f"'{n}'" for n in names.RESERVED_ENV)
_reserved_label_rule = " && ".join(f"!k.startsWith('{p}')" for p in names.RESERVED_LABEL_PREFIXES)
MSG_ENV_RESERVED = (
    "spec.env may not set " + ", ".join(names.RESERVED_ENV) + ": the operator wires those variables"
)
MSG_LABELS_RESERVED = (
    "spec.podLabels may not use the "
    + " or ".join(names.RESERVED_LABEL_PREFIXES)
    + " prefixes: the operator sets those labels"
)
MSG_MICRO_BATCH = "spec.trainer.microBatchSize must not exceed spec.orchestrator.batchSize"


class RLRunSpec(Section):
    """One RL post-training run: every workload of it is rendered from this spec."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("self.trainer.microBatchSize <= self.orchestrator.batchSize", MSG_MICRO_BATCH)
        )
    )

    model: ModelSpec = Field(default_factory=ModelSpec)
    images: ImagesSpec = Field(default_factory=ImagesSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    inference: InferenceSpec = Field(default_factory=InferenceSpec)
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    orchestrator: OrchestratorSpec = Field(default_factory=OrchestratorSpec)
    env_workers: EnvWorkersSpec = Field(default_factory=EnvWorkersSpec)
    multimodal: MultimodalConfig = Field(default_factory=MultimodalConfig)
    transport: TransportConfig = Field(default_factory=TransportConfig)
    sample_upload: SampleUploadSpec = Field(default_factory=SampleUploadSpec)
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    suspend: bool = Field(False, description="Scale the run to zero (Jobs suspended, Deployments at 0).")
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the run when it has been running longer than this."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the RLRun this long after it Succeeded or Failed."
    )
    queue_name: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        description="Kueue LocalQueue: the Jobs get kueue.x-k8s.io/queue-name and Kueue admits them.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description="Extra environment variables for every container.",
        json_schema_extra=validations(
            cel(f"self.all(e, !(e.name in [{_reserved_env}]))", MSG_ENV_RESERVED),
        ),
    )
    env_from: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=32,
        description="core/v1 EnvFromSource entries (e.g. {secretRef: {name: hf-token}}) for every container.",
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra labels on every pod.",
        json_schema_extra=validations(cel(f"self.all(k, {_reserved_label_rule})", MSG_LABELS_RESERVED)),
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Extra annotations on every pod."
    )
    service_account_name: str | None = Field(
        None, min_length=1, max_length=253, description="ServiceAccount of every pod."
    )

    @model_validator(mode="after")
    def _cross(self) -> RLRunSpec:
        if any(e.name in names.RESERVED_ENV for e in self.env):
            raise ValueError(MSG_ENV_RESERVED)
        if any(k.startswith(names.RESERVED_LABEL_PREFIXES) for k in self.pod_labels):
            raise ValueError(MSG_LABELS_RESERVED)
        if self.trainer.micro_batch_size > self.orchestrator.batch_size:
            raise ValueError(MSG_MICRO_BATCH)
        return self


# ------------------------------------------------------------------------------------------ status

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]
CONDITION_TYPES = (
    "Ready",
    "InferenceReady",
    "EnvWorkersReady",
    "OrchestratorReady",
    "TrainerReady",
    "Stalled",
    "ReconcileError",
)


class StatusSection(Section):
    """Status parts tolerate keys they do not know: an older operator must still read a newer status."""

    model_config = ConfigDict(extra="ignore")


class Condition(StatusSection):
    type: str = Field(max_length=64, description="One of " + ", ".join(CONDITION_TYPES) + ".")
    status: Literal["True", "False", "Unknown"]
    reason: str | None = Field(None, max_length=256)
    message: str | None = Field(None, max_length=32768)
    last_transition_time: datetime | None = None
    observed_generation: int | None = Field(None, ge=0)


class ComponentCount(StatusSection):
    ready: int = Field(0, ge=0)
    desired: int = Field(0, ge=0)


class ComponentsStatus(StatusSection):
    inference: ComponentCount | None = None
    env_workers: ComponentCount | None = None
    orchestrator: ComponentCount | None = None
    trainer: ComponentCount | None = None


class ProgressStatus(StatusSection):
    """The runtime's `progress.json` (rlrun.runtime.config.Progress), as copied by the operator."""

    step: int | None = Field(None, ge=0, description="Last completed training step.")
    max_steps: int | None = Field(None, ge=0)
    reward_mean: float | None = Field(None, description="Mean reward of the last step's rollouts.")
    samples_per_second: float | None = None
    policy_lag: int | None = Field(None, ge=0)
    updated_at: datetime | None = None
    attempt: int | None = Field(None, ge=0, description="Orchestrator attempt that reported it.")
    step_seconds: float | None = Field(
        None, ge=0, description="Duration of the last step; seeds stall detection after an operator restart."
    )


class RLRunStatus(StatusSection):
    """Observed state, written only by the operator."""

    phase: Phase | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(None, ge=0)
    start_time: datetime | None = Field(None, description="When the run first had all children (Running).")
    completion_time: datetime | None = None
    restarts: int | None = Field(None, ge=0, description="Trainer-group plus orchestrator restarts.")
    trainer_attempt: int | None = Field(None, ge=0)
    trainer_not_before: datetime | None = Field(
        None, description="Backoff: the trainer group's current attempt is not created before this time."
    )
    orchestrator_restarts: int | None = Field(None, ge=0)
    orchestrator_attempt: int | None = Field(
        None,
        ge=0,
        description="Orchestrator attempt (RLRUN_ATTEMPT of its pod); progress from older ones is refused.",
    )
    orchestrator_not_before: datetime | None = Field(
        None, description="Backoff: the orchestrator's current attempt is not created before this time."
    )
    components: ComponentsStatus | None = None
    progress: ProgressStatus | None = None
    last_step_advance_time: datetime | None = Field(
        None, description="When progress.step last advanced (operator clock); stall detection reads it."
    )
    recent_step_seconds: list[float] = Field(
        default_factory=list, max_length=64, description="Recent step durations; scale the stall threshold."
    )
    message: str | None = None
    reason: str | None = None


# -------------------------------------------------------------------------------------- the object

MSG_NAME_LENGTH = (
    f"metadata.name must be at most {names.MAX_RUN_NAME_LENGTH} characters: child names such as "
    f"<name>{names.LONGEST_NAME_SUFFIX} must stay {names.DNS_LABEL_MAX}-character DNS labels"
)
MSG_NAME_FORM = (
    "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter): "
    "it names the run's Services"
)
MSG_MODEL_IMMUTABLE = (
    "spec.model cannot change once the run started (status.startTime is set): create a new RLRun"
)
MSG_TRAINER_SHAPE_IMMUTABLE = (
    "spec.trainer.nodes, gpusPerNode and processesPerNode cannot change once the run started "
    "(status.startTime is set): create a new RLRun"
)
_started = "has(oldSelf.status) && has(oldSelf.status.startTime)"
ROOT_VALIDATIONS = [
    cel(
        f"size(self.metadata.name) <= {names.MAX_RUN_NAME_LENGTH}",
        MSG_NAME_LENGTH,
    ),
    cel(f"self.metadata.name.matches('{names.RUN_NAME_PATTERN}')", MSG_NAME_FORM),
    cel(
        f"!({_started}) || self.spec.model == oldSelf.spec.model",
        MSG_MODEL_IMMUTABLE,
        field_path=".spec.model",
    ),
    cel(
        f"!({_started}) || (self.spec.trainer.nodes == oldSelf.spec.trainer.nodes && "
        "self.spec.trainer.gpusPerNode == oldSelf.spec.trainer.gpusPerNode && "
        "self.spec.trainer.?processesPerNode == oldSelf.spec.trainer.?processesPerNode)",
        MSG_TRAINER_SHAPE_IMMUTABLE,
        field_path=".spec.trainer",
    ),
]
"""Rules on the whole object (metadata.name, and transitions that need status); the CRD generator puts
them at the root of the schema, where `self.metadata.name` and `oldSelf.status` are visible."""


def check_run_name(name: str) -> str:
    """Raise ValueError with the CRD's message when `name` cannot name a run."""
    if len(name) > names.MAX_RUN_NAME_LENGTH:
        raise ValueError(MSG_NAME_LENGTH)
    if not re.fullmatch(names.RUN_NAME_PATTERN, name):
        raise ValueError(MSG_NAME_FORM)
    return name


class ObjectMeta(BaseModel):
    """The metadata rlrun reads; the API server's other fields (managedFields, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _name(self) -> ObjectMeta:
        check_run_name(self.name)
        return self


class RLRun(BaseModel):
    """A whole RLRun object, as read from a YAML file or from the API server."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api_version: Literal["rlrun.dev/v1alpha1"] = Field(names.API_VERSION, alias="apiVersion")
    kind: Literal["RLRun"] = names.KIND
    metadata: ObjectMeta
    spec: RLRunSpec = Field(default_factory=RLRunSpec)
    status: RLRunStatus | None = None

    @classmethod
    def model_validate(cls, obj: Any, *, strict: bool | None = None, **kwargs: Any) -> RLRun:  # type: ignore[override]
        """Validate a document as the API server does: strictly, as JSON. Lax pydantic would coerce
        `suspend: "yes"` or `nodes: "2"` that the CRD refuses, so `rlrun render` / `rlrun local` and the
        cluster would disagree about the same file; JSON mode still reads RFC 3339 strings as times."""
        if isinstance(obj, cls):
            return obj
        text = json.dumps(obj, default=_json_value)
        return cls.model_validate_json(text, strict=True if strict is None else strict, **kwargs)


def _json_value(value: Any) -> str:
    """YAML may load an unquoted timestamp as a datetime; JSON carries it as RFC 3339, as the API does."""
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


# --------------------------------------------------------------------------- spec -> runtime config


def _section(cls: type[S], value: Section) -> S:
    """The runtime part of a spec section: the fields `cls` knows, nothing Kubernetes-only."""
    return cls.model_validate(value.model_dump(include=set(cls.model_fields)))


def to_runtime_config(name: str, spec: RLRunSpec, *, asset_root: str = DEFAULT_ASSET_ROOT) -> RuntimeConfig:
    """The runtime config every role of run `name` reads; RUN_ID is the RLRun name (a DNS label, so a safe
    path component). `rlrun local` passes its own `asset_root`."""
    t = spec.trainer
    return RuntimeConfig(
        run_id=name,
        asset_root=asset_root,
        model=_section(ModelConfig, spec.model),
        orchestrator=_section(OrchestratorConfig, spec.orchestrator),
        trainer=TrainerConfig(
            nodes=t.nodes,
            processes_per_node=t.ranks_per_node,
            checkpoint_interval=t.checkpoint_interval,
            micro_batch_size=t.micro_batch_size,
            clip_epsilon=t.clip_epsilon,
            max_grad_norm=t.max_grad_norm,
        ),
        env_workers=EnvWorkersConfig(
            replicas=spec.env_workers.replicas,
            workers_per_replica=spec.env_workers.workers_per_replica,
            environment=_section(EnvironmentConfig, spec.env_workers.environment),
        ),
        multimodal=spec.multimodal,
        transport=spec.transport,
        sample_upload=_section(SampleUploadConfig, spec.sample_upload),
    )
