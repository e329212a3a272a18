"""The RLRun status models: the single source of the CRD's status schema, written only by the operator."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from rlrun.runtime.config import Section

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
