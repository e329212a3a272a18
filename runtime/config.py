"""The runtime configuration: what every role of a run reads, in `rlrun local` and in the pods.

The operator renders this model (from `RLRun.spec`) into the `<run>-config` ConfigMap as one JSON file;
`rlrun local` builds it from the same RLRun YAML. Field names are camelCase on the wire (they are
Kubernetes spec fields) and snake_case in Python. Unknown keys are rejected so a typo never silently
falls back to a default.

This module is also where the runtime -> operator progress contract (`Progress`, `progress.json`) lives,
because the operator may import `rlrun.runtime.config` and nothing else of the runtime.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from rlrun import pod_contract

SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
"""Ids that become path components (RUN_ID, environment ids, ...). `.` and `..` are refused separately."""

ENV_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
"""An environment named by import path, `package.module:factory` (the entry-point reference syntax)."""
ENVIRONMENT_INVALID = "EnvironmentInvalid"
"""Prefix of an env-worker's termination message when its environment is unknown or its args are bad;
the operator fails the run with this reason (no restart can install a package)."""
DEFAULT_ASSET_ROOT = "/data/outputs"
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
PIL_MAX_IMAGE_PIXELS = 178_956_970  # Pillow refuses larger images itself (2 x its MAX_IMAGE_PIXELS)
CONFIG_ENV = pod_contract.CONFIG_ENV  # path of the JSON config file inside a pod
PROGRESS_FILE = "progress.json"
RESTARTS_FILE = "restarts.json"
"""`rlrun local`'s restart counts per group ({"trainer": n, "orchestrator": m}), for status.restarts."""
ATTEMPT_LOG_DIR = re.compile(r"^attempt-(0|[1-9][0-9]*)$")


def attempt_log_dir(run_dir: Path, attempt: int) -> Path:
    """`<run_dir>/logs/attempt-<n>/`: every role of attempt n writes its log there (`<role>.log`), on the
    run's volume, so the logs of an attempt stay readable after its processes are gone."""
    return run_dir / "logs" / f"attempt-{int(attempt)}"


def forensics_dir(run_dir: Path, attempt: int) -> Path:
    """`<run_dir>/forensics/attempt-<n>/`: the stack dumps (runtime/stackdump.py) of attempt n's processes;
    the operator's Stalled Event names it (it cannot read the volume itself)."""
    return run_dir / "forensics" / f"attempt-{int(attempt)}"


def log_attempts(run_dir: Path) -> list[int]:
    """The attempts with a log folder, ascending."""
    root = run_dir / "logs"
    found = (
        [m.group(1) for p in root.iterdir() if (m := ATTEMPT_LOG_DIR.match(p.name))] if root.is_dir() else []
    )
    return sorted(int(n) for n in found)


VOLUME_NOT_WRITABLE = "VolumeNotWritable"
"""Prefix of a role's termination message when the run volume is not writable (runtime/volume.py); the
operator fails the run with this reason instead of spending restarts on a volume no restart can fix."""
DEFAULT_TERMINATION_GRACE_SECONDS = 60
MIN_TERMINATION_GRACE_SECONDS = 5
MIN_MAX_SEQ_LEN = 16
"""`trainer.maxSeqLen` bounds: below 16 tokens no chat template leaves room for a completion; above 2^20 the
limit bounds nothing a trainer could hold (it is there to catch a typo'd extra digit, not to tune)."""
MAX_MAX_SEQ_LEN = 1 << 20
TORCHRUN_GRACE_MARGIN_SECONDS = 3


def torchrun_shutdown_seconds(grace_seconds: int) -> int:
    """torchrun's SIGTERM-to-SIGKILL window for its ranks: the pod's grace less a margin, so torchrun
    reaps its ranks (and exits) before the kubelet or the local launcher SIGKILLs it."""
    return max(1, grace_seconds - TORCHRUN_GRACE_MARGIN_SECONDS)


def check_safe_id(value: str, what: str = "id") -> str:
    """Return `value` if it can be used as one path component, else raise ValueError naming `what`."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or value in {".", ".."}:
        raise ValueError(
            f"{what} {value!r} is not a safe id: use letters, digits, '_', '.', '-' (not '.' or '..')"
        )
    return value


class Section(BaseModel):
    """Base of every config section: camelCase aliases, unknown keys rejected, values validated on assignment."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_assignment=True
    )


class ModelConfig(Section):
    """Which policy model to train and serve."""

    name: str = Field(
        "builtin:tiny-qwen2-vl",
        description="A Hugging Face model id, an absolute path on the run volume, or "
        "'builtin:tiny-qwen2-vl' (a tiny random Qwen2-VL built offline, for CPU runs and tests).",
        min_length=1,
    )
    revision: str | None = Field(None, description="Model revision (branch, tag or commit) for hub ids.")


class MultimodalConfig(Section):
    """Ephemeral multimodal pixels: images travel as refs, the trainer re-creates pixels."""

    defer_materialization: bool = Field(
        True, description="Ship image refs to the trainer and materialize pixel_values there (recommended)."
    )
    materialize_concurrency: int = Field(4, ge=1, le=64, description="Images processed at once per rank.")
    missing_image_policy: Literal["error", "drop"] = Field(
        "error",
        description="'error' fails the step naming the URI and hash; 'drop' zeroes that sample's loss "
        "and counts it in a metric.",
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        le=PIL_MAX_IMAGE_PIXELS,
        description="Largest image (width x height) any role opens; larger ones (decompression bombs) are "
        "refused per image, naming it, before their pixels are decoded.",
    )
    dataset_roots: list[str] = Field(
        default_factory=list,
        description="Absolute directories whose images environments may reference as file:// URLs (the "
        "run's asset tree is always allowed). Any other file, or a symlink leading out of these, is refused.",
    )

    @model_validator(mode="after")
    def _absolute_roots(self) -> MultimodalConfig:
        relative = [root for root in self.dataset_roots if not os.path.isabs(root)]
        if relative:
            raise ValueError(f"multimodal.datasetRoots must be absolute paths, got {relative}")
        return self


class TransportConfig(Section):
    """ZMQ micro-batch fan-out from the trainer master (rank 0) to every data rank."""

    base_port: int = Field(5555, ge=1024, le=65532, description="Data on basePort+1, READY on basePort+2.")
    host: str | None = Field(
        None, description="Host ranks connect to; unset or 0.0.0.0 means $MASTER_ADDR. Sockets bind 0.0.0.0."
    )
    hwm: int = Field(64, ge=1, description="ZMQ high-water mark (messages) on both ends.")
    ready_timeout_seconds: float = Field(300.0, ge=1, description="How long the master waits for READY.")
    receive_timeout_seconds: float = Field(
        300.0, ge=1, description="How long a rank waits for a published step."
    )
    publish_grace_ms: int = Field(1000, ge=0, description="Pause after READY before step 0 (slow joiners).")
    pack_watchdog_seconds: float = Field(
        1800.0,
        ge=1,
        description="A master whose packing makes no progress for this long exits (liveness of a wedged "
        "master); waiting for the orchestrator's batch is progress. Ranks fail when the master is silent "
        "this long.",
    )
    collective_timeout_seconds: float = Field(
        600.0,
        ge=1,
        description="Bound on every trainer collective and barrier: a hung rank fails the group after "
        "this long. Must exceed the slowest checkpoint save and weight export plus reload.",
    )
    peer_silence_seconds: float = Field(
        120.0,
        ge=2,
        description="A trainer rank whose heartbeat thread is silent this long (stopped, wedged holding the "
        "GIL) gets every live rank's stacks dumped to the volume and fails the group; keep it below "
        "collectiveTimeoutSeconds so the dump comes first.",
    )


class LogsConfig(Section):
    """Each role's log file on the run volume (`logs/attempt-<n>/<role>.log`): size-bounded by rotation."""

    max_bytes: int = Field(
        64 * 2**20,
        ge=4096,
        description="A log file over this size is rotated to <file>.1 (older ones shift).",
    )
    backups: int = Field(2, ge=0, le=20, description="Rotated files kept per log (the oldest is deleted).")


class SampleUploadConfig(Section):
    """Sample logging: parquet with re-inlined images, streamed to object storage."""

    enabled: bool = Field(False, description="Upload sample parquets; when off they stay on the volume.")
    presign_endpoint: str | None = Field(
        None, description="Platform mode: POST here to get a presigned PUT URL for each file."
    )
    bucket: str | None = Field(None, description="S3 mode: bucket to sign PUT URLs for.")
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, R2, ...); unset = AWS."
    )
    region: str = Field("us-east-1", description="S3 region used for signing.")
    prefix: str = Field("samples", description="Object key prefix.")
    compression: Literal["zstd", "snappy", "none"] = Field("zstd", description="Parquet compression codec.")
    max_inline_image_bytes: int = Field(
        2 * 1024 * 1024, ge=0, description="Images larger than this stay file refs in the logged samples."
    )
    every_n_steps: int = Field(1, ge=1, description="Log samples every N steps.")
    upload_deadline_seconds: float = Field(
        300.0,
        gt=0,
        description="Total time one file's upload may take, retries included; then it is "
        "kept on the volume and retried later.",
    )
    queue_size: int = Field(
        4,
        ge=1,
        le=1024,
        description="Uploads waiting at most; a step that finds the queue full is kept "
        "on the volume for a later retry (counted), never waited for.",
    )
    max_pending_files: int = Field(
        100,
        ge=1,
        description="Failed or skipped uploads kept on the volume for retry; past it the oldest "
        "is deleted and counted.",
    )

    @model_validator(mode="after")
    def _target_when_enabled(self) -> SampleUploadConfig:
        if self.enabled and not (self.presign_endpoint or self.bucket):
            raise ValueError("sampleUpload.enabled needs sampleUpload.presignEndpoint or sampleUpload.bucket")
        return self


class MlflowConfig(Section):
    """An MLflow tracking server; its credentials (MLFLOW_TRACKING_TOKEN or _USERNAME/_PASSWORD) come from
    tracking.credentialsSecret."""

    tracking_uri: str = Field(
        min_length=1, max_length=2048, description="The tracking server, e.g. https://mlflow.example.com."
    )
    experiment: str = Field("rlrun", min_length=1, max_length=500, description="Experiment name.")


class WandbConfig(Section):
    """A Weights & Biases project; WANDB_API_KEY comes from tracking.credentialsSecret."""

    project: str = Field(min_length=1, max_length=128, description="W&B project.")
    entity: str | None = Field(None, min_length=1, max_length=128, description="W&B entity (team or user).")
    mode: Literal["online", "offline"] = Field(
        "online",
        description="'offline' writes the run under <run dir>/tracking only (wandb sync uploads it).",
    )


class TrackingConfig(Section):
    """Experiment tracking: the orchestrator logs each step's figures (its own and the trainer's), the
    resolved config and sample tables to each configured sink, one tracked run per RLRun (resumed after a
    restart, never a new one per attempt). Unset: no tracking library is imported."""

    mlflow: MlflowConfig | None = None
    wandb: WandbConfig | None = None


class EnvironmentConfig(Section):
    """Which environment env-workers serve."""

    id: str = Field(
        "color-codeword",
        description="A built-in ('color-codeword', 'text-reverse', 'calculator', 'verifiers'), an installed "
        "package's entry point in the 'rlrun.environments' group, or an import path 'package.module:factory'.",
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="Arguments, validated against the environment's own model."
    )

    @model_validator(mode="after")
    def _safe(self) -> EnvironmentConfig:
        if not ENV_IMPORT_PATH.fullmatch(self.id):
            check_safe_id(self.id, "environment id")
        return self


class PackagesConfig(Section):
    """Packages env-workers install at start (an environment not in the image), into a virtualenv cached on
    the run volume by what is installed; the env-worker then runs in it (runtime/envs/packages.py)."""

    requirements: list[str] = Field(
        default_factory=list,
        description="Requirement specifiers, e.g. 'my-env==1.2'; empty: install nothing.",
    )
    index_url: str | None = Field(
        None, description="Package index (PEP 503 simple API); credentials come from a Secret, never here."
    )
    wheels_dir: str | None = Field(
        None,
        description="Absolute directory of wheels on the run volume; without indexUrl packages come from it "
        "alone (air-gapped clusters).",
    )
    install_timeout_seconds: float = Field(
        1800.0,
        ge=1,
        le=86400,
        description="How long the install of the packages may take (uv's whole run); past it the env-worker "
        "fails, naming this field.",
    )

    @model_validator(mode="after")
    def _absolute(self) -> PackagesConfig:
        if self.wheels_dir is not None and not os.path.isabs(self.wheels_dir):
            raise ValueError(f"packages.wheelsDir must be an absolute path, got {self.wheels_dir!r}")
        return self


class EnvWorkersConfig(Section):
    replicas: int = Field(1, ge=1, le=1024, description="Env-worker pods (processes in `rlrun local`).")
    workers_per_replica: int = Field(1, ge=1, le=64, description="Concurrent rollout workers per replica.")
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    packages: PackagesConfig = Field(default_factory=PackagesConfig)


class OrchestratorConfig(Section):
    batch_size: int = Field(32, ge=1, description="Samples per training step (a multiple of groupSize).")
    group_size: int = Field(8, ge=2, description="Samples per prompt; advantages are relative to the group.")
    max_steps: int = Field(100, ge=1, description="Training steps; reaching it completes the run.")
    max_async_steps: int = Field(
        1, ge=0, description="Max policy lag: rollouts may come from step-N weights."
    )
    learning_rate: float = Field(1e-3, gt=0, description="Optimizer learning rate.")
    seed: int = Field(0, ge=0, description="Seed for sampling prompts and initializing the tiny model.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for rollouts.")
    max_tokens: int = Field(8, ge=1, description="Max completion tokens per rollout.")
    startup_timeout_seconds: float = Field(
        900.0,
        ge=1,
        le=86400,
        description="How long the orchestrator waits at start for inference, then env-workers, to answer "
        "/health (vLLM needs minutes); waiting is not a failure until this bound.",
    )
    weight_sync_timeout_seconds: float = Field(
        300.0,
        ge=1,
        le=86400,
        description="Once a step's weights are exported, how long until an inference replica serves them: "
        "the bound of the trainer's reload of each replica and of the orchestrator's wait for one in sync "
        "(then the step fails, naming each replica's version). Keep it below "
        "transport.collectiveTimeoutSeconds.",
    )

    @model_validator(mode="after")
    def _divisible(self) -> OrchestratorConfig:
        if self.batch_size % self.group_size:
            raise ValueError(
                f"orchestrator.batchSize ({self.batch_size}) must be a multiple of "
                f"orchestrator.groupSize ({self.group_size})"
            )
        return self


class TrainerConfig(Section):
    """The runtime part of the trainer; its Kubernetes shape (nodes, GPUs) lives in the RLRun spec."""

    nodes: int = Field(1, ge=1, description="Trainer nodes (pods).")
    processes_per_node: int = Field(1, ge=1, description="torchrun ranks per node (GPUs per node on GPU).")
    checkpoint_interval: int = Field(10, ge=1, description="Save a checkpoint every N steps.")
    micro_batch_size: int = Field(8, ge=1, description="Samples per micro-batch.")
    clip_epsilon: float = Field(0.2, gt=0, description="PPO-style clipping of the importance ratio.")
    max_grad_norm: float = Field(1.0, gt=0)
    scale_step_by_signal: bool = Field(
        True,
        description="Multiply each step's learning rate by the share of its groups that carry signal "
        "(non-degenerate), so a step trained on a few groups moves the policy proportionally less; off: "
        "every step with any signal is a full-size step (plain GRPO with degenerate-group filtering).",
    )
    max_seq_len: int | None = Field(
        None,
        ge=MIN_MAX_SEQ_LEN,
        le=MAX_MAX_SEQ_LEN,
        description="Longest training sample in tokens (prompt + completion), a bound on trainer memory: a "
        "longer sample is cut there (before an image the cut would split, dropping the images cut off); one "
        "left with no trained token is dropped and counted (metrics.jsonl samples_too_long). Unset: no limit.",
    )
    termination_grace_period_seconds: int = Field(
        DEFAULT_TERMINATION_GRACE_SECONDS,
        ge=MIN_TERMINATION_GRACE_SECONDS,
        le=86400,
        description="After SIGTERM (suspend, eviction, drain): the window to finish or abandon the step in "
        "flight and write a checkpoint; the trainer pods' terminationGracePeriodSeconds.",
    )


class RetentionConfig(Section):
    """What of the run's asset tree is kept as the run goes (runtime/retention.py; `rlrun retention`)."""

    keep_last_checkpoints: int = Field(2, ge=1, le=1000, description="Newest complete checkpoints kept.")
    keep_best: int = Field(
        0,
        ge=0,
        le=1000,
        description="Also kept: the checkpoints whose policy scored the best mean reward over the rollouts it "
        "generated itself (orchestrator metrics; unscored ones never count). 0: none.",
    )
    weights_keep_last: int = Field(3, ge=1, le=1000, description="Newest weight exports kept.")
    rollouts_max_age_steps: int = Field(
        0,
        ge=0,
        description="Consumed training batches are kept this many steps behind the newest checkpoint "
        "(those a resume reads, from the oldest kept checkpoint on, always are).",
    )


class ResumeFrom(Section):
    """Start from another run's checkpoint (a fork). The parent's run directory must be on the same volume
    (the same output dir for `rlrun local`): the checkpoint is hard-linked into this run's tree at its first
    start, so the parent's pruning or deletion cannot take it away afterwards, at no extra space."""

    run: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Parent run name.",
    )
    step: int = Field(ge=1, description="The parent's checkpoint step_<step> (its `DONE` marker must exist).")


class RuntimeConfig(Section):
    """Everything the roles read. `run_id` and `asset_root` come from the environment in pods."""

    run_id: str = Field("local", description="RUN_ID: names the run directory <assetRoot>/run_<runId>.")
    asset_root: str = Field(DEFAULT_ASSET_ROOT, description="Absolute root of run directories.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    orchestrator: OrchestratorConfig = Field(default_factory=OrchestratorConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    env_workers: EnvWorkersConfig = Field(default_factory=EnvWorkersConfig)
    multimodal: MultimodalConfig = Field(default_factory=MultimodalConfig)
    transport: TransportConfig = Field(default_factory=TransportConfig)
    sample_upload: SampleUploadConfig = Field(default_factory=SampleUploadConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    resume_from: ResumeFrom | None = None
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)

    @model_validator(mode="after")
    def _check(self) -> RuntimeConfig:
        check_safe_id(self.run_id, "RUN_ID")
        if self.resume_from and self.resume_from.run == self.run_id:
            raise ValueError(f"resumeFrom.run {self.run_id!r} names this run itself; name the parent run")
        if not os.path.isabs(self.asset_root):
            raise ValueError(f"assetRoot must be an absolute path, got {self.asset_root!r}")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.asset_root) / f"run_{self.run_id}"

    @property
    def parent_dir(self) -> Path | None:
        """The run directory `resumeFrom` names (beside this one), or None."""
        return Path(self.asset_root) / f"run_{self.resume_from.run}" if self.resume_from else None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> RuntimeConfig:
        """Read the config file ($RLRUN_CONFIG by default); RUN_ID / RLRUN_ASSET_ROOT env vars override
        (of `environ`, default os.environ)."""
        environ = os.environ if environ is None else environ
        path = path or environ.get(CONFIG_ENV)
        data: dict[str, Any] = json.loads(Path(path).read_text()) if path else {}
        if run_id := environ.get(pod_contract.RUN_ID_ENV):
            data["runId"] = run_id
        if root := environ.get(pod_contract.ASSET_ROOT_ENV):
            data["assetRoot"] = root
        return cls.model_validate(data)


# ---------------------------------------------------------------- runtime -> operator progress contract


class ReplicaProgress(Section):
    """One inference replica as the orchestrator last probed it."""

    name: str = Field(max_length=253, description="The replica's pod (its host name), or host:port locally.")
    served_version: int | None = Field(None, ge=0, description="Policy version it serves; null: no answer.")
    in_sync: bool = Field(description="Serves the newest exported weights: only such replicas get rollouts.")
    error: str = Field("", max_length=256, description="Why it gave no version (unreachable, HTTP error).")


TRAINER_STARTUP_FILE = "trainer/startup.json"
STACKS_SUMMARY_MAX = 1024
"""Longest stack-dump diagnosis a start-up report and status carry (runtime/stackdump.py trims to it)."""


class TrainerStartup(Section):
    """When the trainer attempt's start-up phases ended (written by rank 0 as `trainer/startup.json`;
    the orchestrator relays it in its progress reports, the operator turns it into status.startup)."""

    attempt: int = Field(0, ge=0, description="The trainer attempt ($RLRUN_ATTEMPT).")
    rendezvous_at: datetime | None = Field(None, description="Every rank joined the process group.")
    model_loaded_at: datetime | None = Field(None, description="Policy (and checkpoint) loaded on rank 0.")
    first_step_at: datetime | None = Field(None, description="The attempt's first step finished.")
    previous_attempt_stacks: str | None = Field(
        None,
        max_length=STACKS_SUMMARY_MAX,
        description="What the previous attempt's trainer processes were doing when they were stopped, "
        "diagnosed from their stack dumps at this attempt's start (runtime/stackdump.py).",
    )


def write_trainer_startup(run_dir: Path, startup: TrainerStartup) -> None:
    path = run_dir / TRAINER_STARTUP_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(startup.model_dump_json(by_alias=True))
    os.replace(tmp, path)


def read_trainer_startup(run_dir: Path) -> TrainerStartup | None:
    try:
        return TrainerStartup.model_validate_json((run_dir / TRAINER_STARTUP_FILE).read_bytes())
    except (OSError, ValueError):
        return None


class Progress(Section):
    """What the orchestrator publishes as `<run_dir>/progress.json` (atomic rename) and on
    `GET /progress` of its status endpoint; the operator copies it into `RLRun.status.progress`.

    `attempt` is the orchestrator restart attempt and `step` is monotone within a run: the operator
    ignores a report whose (attempt, step, updatedAt) is older than what status already holds.
    """

    run_id: str
    attempt: int = Field(0, ge=0, description="Restart attempt of the reporting orchestrator.")
    step: int = Field(0, ge=0, description="Last completed training step.")
    max_steps: int = Field(ge=1)
    reward_mean: float | None = Field(None, description="Mean reward of the last step's rollouts.")
    samples_per_second: float | None = None
    policy_lag: int | None = Field(
        None, ge=0, description="Steps between rollout weights and trainer weights."
    )
    step_seconds: float | None = Field(None, ge=0, description="Duration of the last step.")
    weights_version: int | None = Field(
        None, ge=0, description="Newest complete weights export: the version every replica should serve."
    )
    inference_replicas: list[ReplicaProgress] = Field(default_factory=list, max_length=256)
    prompts_consumed: int = Field(0, ge=0, description="Prompt groups the recorded steps consumed.")
    prompts_filtered: int = Field(0, ge=0, description="Of those, groups filtered out (no signal).")
    prompts_regenerated: int = Field(0, ge=0, description="Groups in flight at a restart, regenerated.")
    state: Literal["starting", "running", "succeeded", "failed", "interrupted"] = "running"
    message: str = ""
    trainer_startup: TrainerStartup | None = None
    updated_at: Annotated[datetime, Field(default_factory=lambda: datetime.now(UTC))]

    def newer_than(self, other: Progress | None) -> bool:
        """True when this report should replace `other` (older attempts never overwrite newer ones)."""
        if other is None:
            return True
        return (self.attempt, self.step, self.updated_at) > (other.attempt, other.step, other.updated_at)


def write_progress(run_dir: Path, progress: Progress) -> Path:
    """Write progress.json atomically (temp file + rename) so readers never see a partial file."""
    path = run_dir / PROGRESS_FILE
    tmp = path.with_name(f".{PROGRESS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(progress.model_dump_json(by_alias=True))
    os.replace(tmp, path)
    return path
