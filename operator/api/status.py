"""The RLRun status models: the single source of the CRD's status schema, written only by the operator."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from rlrun.runtime.config import STACKS_SUMMARY_MAX, ResumeFrom, Section, TrainerStartup

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]
CONDITION_TYPES = (
    "Ready",
    "InferenceReady",
    "EnvWorkersReady",
    "OrchestratorReady",
    "TrainerReady",
    "Stalled",
    "ReconcileError",
    "WeightsInSync",
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
    trainer_startup: TrainerStartup | None = None
    prompts_consumed: int | None = Field(None, ge=0, description="Prompt groups consumed by recorded steps.")
    prompts_filtered: int | None = Field(None, ge=0, description="Of those, groups filtered out.")
    prompts_regenerated: int | None = Field(
        None,
        ge=0,
        description="Groups in flight at an orchestrator restart, regenerated from the same seeds.",
    )


class StartupTiming(StatusSection):
    """Seconds from a trainer attempt's Job creation to the end of each start-up phase (operator/startup.py)."""

    attempt: int = Field(ge=0)
    scheduled_seconds: float | None = Field(None, ge=0, description="Every pod scheduled.")
    containers_started_seconds: float | None = Field(
        None, ge=0, description="Every container running: images pulled."
    )
    rendezvous_seconds: float | None = Field(None, ge=0, description="Every rank joined the process group.")
    model_loaded_seconds: float | None = Field(None, ge=0, description="Policy and checkpoint loaded.")
    first_step_seconds: float | None = Field(None, ge=0, description="The attempt's first step finished.")
    previous_attempt_stacks: str | None = Field(
        None,
        max_length=STACKS_SUMMARY_MAX,
        description="What the previous attempt's trainer processes were doing when they were stopped "
        "(their stack dumps, diagnosed at this attempt's start).",
    )


class ReplicaStatus(StatusSection):
    name: str = Field(max_length=253, description="The inference pod.")
    served_version: int | None = Field(None, ge=0, description="Policy version it serves; null: no answer.")
    in_sync: bool | None = Field(None, description="Serves weightsVersion: only such replicas get rollouts.")
    error: str | None = Field(None, max_length=256, description="Why it gave no version.")


class InferenceStatus(StatusSection):
    """Each inference replica's served policy, as the orchestrator last reported it."""

    weights_version: int | None = Field(None, ge=0, description="Newest exported weights (current policy).")
    replicas: list[ReplicaStatus] = Field(default_factory=list, max_length=256)


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
    inference: InferenceStatus | None = None
    last_step_advance_time: datetime | None = Field(
        None, description="When progress.step last advanced (operator clock); stall detection reads it."
    )
    recent_step_seconds: list[float] = Field(
        default_factory=list, max_length=64, description="Recent step durations; scale the stall threshold."
    )
    gpu_hours_used: float | None = Field(
        None, ge=0, description="GPUs held by the run's pods x time, every attempt included (spec.budget)."
    )
    gpus_in_use: int | None = Field(None, ge=0, description="GPUs the run's pods held at the last pass.")
    gpu_accounted_at: datetime | None = Field(None, description="GPU time is accounted up to this time.")
    startup: list[StartupTiming] = Field(
        default_factory=list, max_length=16, description="Start-up timings of the last trainer attempts."
    )
    resumed_from: ResumeFrom | None = Field(
        None, description="A fork's parent run and checkpoint step (spec.resumeFrom, once admitted)."
    )
    trainer_stalled_attempt: int | None = Field(
        None,
        ge=0,
        description="The last trainer attempt restarted because it stalled; the next attempt diagnoses "
        "its stack dumps (Event StallDiagnosed).",
    )
    message: str | None = None
    reason: str | None = None
