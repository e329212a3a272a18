"""The RLRun spec: pydantic models (the single source of the CRD's spec schema) and spec -> runtime config.

The runtime sections of `rlrun.runtime.config` are reused as they are (or subclassed to add the
Kubernetes-only knobs: resources, scheduling) so one YAML drives both `rlrun local` and the operator.
Cross-field rules live twice, on purpose: as CEL (enforced by the API server) and as pydantic validators
with the same message (`messages.py`), so `rlrun render` / `rlrun local` fail the same way offline.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from rlrun.operator import names
from rlrun.operator.api.messages import (
    MSG_BACKOFF,
    MSG_ENGINE_GPU,
    MSG_ENV_RESERVED,
    MSG_GPU_IN_RESOURCES,
    MSG_LABELS_RESERVED,
    MSG_MICRO_BATCH,
    MSG_PACKAGES_CREDS,
    MSG_PROCS,
    MSG_RESUME_FROM_IMMUTABLE,
    MSG_STORAGE_EXCLUSIVE,
    MSG_TP,
    MSG_UPLOAD_BOTH,
    MSG_UPLOAD_CREDS,
)
from rlrun.runtime.config import (
    DEFAULT_ASSET_ROOT,
    EnvironmentConfig,
    EnvWorkersConfig,
    LogsConfig,
    ModelConfig,
    MultimodalConfig,
    OrchestratorConfig,
    PackagesConfig,
    ResumeFrom,
    RetentionConfig,
    RuntimeConfig,
    SampleUploadConfig,
    Section,
    TrackingConfig,
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

    replicas: int = Field(
        1, ge=1, le=names.MAX_INFERENCE_REPLICAS, description="Inference server pods (a StatefulSet)."
    )
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
    scale_step_by_signal: bool = TrainerConfig.model_fields["scale_step_by_signal"]
    max_seq_len: int | None = TrainerConfig.model_fields["max_seq_len"]
    termination_grace_period_seconds: int = TrainerConfig.model_fields["termination_grace_period_seconds"]
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
        max_length=253,
        pattern=r"^([A-Za-z0-9_][A-Za-z0-9_.-]*|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*)$",
        description="A built-in ('color-codeword', 'text-reverse', 'calculator', 'verifiers'), an installed "
        "package's entry point in the 'rlrun.environments' group, or an import path 'package.module:factory'.",
    )


class PackagesSpec(PackagesConfig):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("!has(self.credentialsSecret) || has(self.indexUrl)", MSG_PACKAGES_CREDS)
        )
    )

    credentials_secret: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description="Secret with 'username' and 'password' for indexUrl, given to the env-workers only.",
    )

    @model_validator(mode="after")
    def _creds_need_index(self) -> PackagesSpec:
        if self.credentials_secret and not self.index_url:
            raise ValueError(MSG_PACKAGES_CREDS)
        return self


class EnvWorkersSpec(EnvWorkersConfig):
    """The env-workers (a Deployment, CPU only)."""

    environment: EnvironmentSpec = Field(default_factory=EnvironmentSpec)
    image: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="Image for the env-workers (FROM the runtime image, plus your environment's package); "
        "default images.runtime.",
    )
    packages: PackagesSpec = Field(default_factory=PackagesSpec)
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


class TrackingSpec(TrackingConfig):
    """Experiment tracking (MLflow, Weights & Biases), logged by the orchestrator."""

    credentials_secret: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description="Secret whose keys WANDB_API_KEY, MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD (each optional) the orchestrator gets as env; never logged.",
    )


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


class Budget(Section):
    """Stop the run when a budget is spent: Succeeded / BudgetExhausted, the trainer checkpointing the step
    in flight within its terminationGracePeriodSeconds (operator/budget.py)."""

    max_gpu_hours: float | None = Field(
        None,
        gt=0,
        alias="maxGPUHours",
        description="GPUs held by the run's pods x time, all attempts (restarts) included; status.gpuHoursUsed.",
    )
    max_wallclock_seconds: int | None = Field(
        None, ge=1, description="Wall-clock seconds since the run started (suspended time included)."
    )


_reserved_env = ", ".join(f"'{n}'" for n in names.RESERVED_ENV)
_reserved_label_rule = " && ".join(f"!k.startsWith('{p}')" for p in names.RESERVED_LABEL_PREFIXES)


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
    logs: LogsConfig = Field(default_factory=LogsConfig)
    sample_upload: SampleUploadSpec = Field(default_factory=SampleUploadSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy)
    resume_from: ResumeFrom | None = Field(
        None,
        description="Fork: start from checkpoint `step` of RLRun `run` in this namespace. The volume is "
        "shared, not copied: the pods mount the parent's claim, which the parent cannot delete while this "
        "run exists. Set at creation only: it cannot be added, changed or removed afterwards.",
        # This refuses a change. Adding or removing it is refused at the root (ROOT_VALIDATIONS): a rule
        # on an optional field only runs when the old and the new object both have it.
        json_schema_extra=validations(cel("self == oldSelf", MSG_RESUME_FROM_IMMUTABLE)),
    )
    budget: Budget = Field(default_factory=Budget)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
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
            scale_step_by_signal=t.scale_step_by_signal,
            max_seq_len=t.max_seq_len,
            termination_grace_period_seconds=t.termination_grace_period_seconds,
        ),
        env_workers=EnvWorkersConfig(
            replicas=spec.env_workers.replicas,
            workers_per_replica=spec.env_workers.workers_per_replica,
            environment=_section(EnvironmentConfig, spec.env_workers.environment),
            packages=_section(PackagesConfig, spec.env_workers.packages),
        ),
        multimodal=spec.multimodal,
        transport=spec.transport,
        logs=spec.logs,
        sample_upload=_section(SampleUploadConfig, spec.sample_upload),
        tracking=_section(TrackingConfig, spec.tracking),
        resume_from=spec.resume_from,
        retention=spec.retention,
    )
