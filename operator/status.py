"""RLRun status as a typed working copy, conditions with honest transition times, readiness. Pure.

A pass loads the stored status into `RunStatus`, every decision edits that copy, and the operator writes
it back once (JobSet's one-write-per-pass). `set_condition` moves `lastTransitionTime` only when a
condition's status flips, so a message refresh never looks like a transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rlrun.operator.api import RLRunStatus, StatusSection
from rlrun.operator.budget import GpuAccount
from rlrun.operator.observe import Children
from rlrun.operator.restarts import GroupState

PENDING, RUNNING, SUCCEEDED, FAILED, SUSPENDED = "Pending", "Running", "Succeeded", "Failed", "Suspended"
TERMINAL = frozenset({SUCCEEDED, FAILED})

COMPONENT_CONDITIONS = {
    "inference": "InferenceReady",
    "env-workers": "EnvWorkersReady",
    "orchestrator": "OrchestratorReady",
    "trainer": "TrainerReady",
}
STATUS_COMPONENT_KEYS = {
    "inference": "inference",
    "env-workers": "envWorkers",
    "orchestrator": "orchestrator",
    "trainer": "trainer",
}


def _dump(model: StatusSection) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def fmt_time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


STEP_HISTORY = 16
"""Step durations kept in status for the stall threshold's median."""


def progress_order(report: dict[str, Any]) -> tuple[int, int, datetime]:
    """Newer-than order of progress reports: (attempt, step, updatedAt)."""
    updated = parse_time(report.get("updatedAt")) or datetime.min.replace(tzinfo=UTC)
    return int(report.get("attempt") or 0), int(report.get("step") or 0), updated


def take_progress(st: RunStatus, report: dict[str, Any] | None, now: datetime) -> None:
    """Fold the newest progress report into status; a higher step (or a new attempt) is an advance."""
    held = st.progress
    if report is None or (held is not None and progress_order(report) <= progress_order(held)):
        return
    advanced = held is None or progress_order(report)[:2] > progress_order(held)[:2]
    st.progress = dict(report)
    if report.get("inferenceReplicas"):
        st.inference = {
            "weightsVersion": report.get("weightsVersion"),
            "replicas": report["inferenceReplicas"],
        }
    if advanced:
        st.step_advanced_at = now
        if report.get("stepSeconds") is not None:
            st.recent_step_seconds = (*st.recent_step_seconds, float(report["stepSeconds"]))[-STEP_HISTORY:]


@dataclass
class RunStatus:
    """Mutable working copy of `RLRun.status` for one pass.

    `restarts` in status counts trainer-group plus orchestrator restarts (the printer column); the trainer
    part is `restarts - orchestratorRestarts`. `*NotBefore` hold the backoff deadline of the next attempt.
    """

    phase: str = ""
    """Empty until the first pass, so the first phase (Pending) is a transition with its Event."""
    reason: str = ""
    message: str = ""
    conditions: list[dict[str, Any]] = field(default_factory=list)
    observed_generation: int = 0
    start_time: datetime | None = None
    completion_time: datetime | None = None
    trainer: GroupState = field(default_factory=GroupState)
    orchestrator: GroupState = field(default_factory=GroupState)
    components: dict[str, dict[str, int]] = field(default_factory=dict)
    progress: dict[str, Any] | None = None
    step_advanced_at: datetime | None = None
    """When `progress.step` last advanced (operator clock): stall detection reads it from here, not from one
    replica's memory, so any operator reading the RLRun reaches the same verdict."""
    recent_step_seconds: tuple[float, ...] = ()
    """The last STEP_HISTORY step durations; their median scales the stall threshold."""
    resumed_from: dict[str, Any] | None = None
    gpu: GpuAccount = field(default_factory=GpuAccount)
    startup: list[dict[str, Any]] = field(default_factory=list)
    trainer_stalled_attempt: int | None = None
    inference: dict[str, Any] | None = None
    """Each inference replica's served version, from the orchestrator's reports (`WeightsInSync`)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunStatus:
        """Read `RLRun.status` through its API model (`RLRunStatus`): field names, types and time parsing
        come from the one model the CRD is generated from."""
        m = RLRunStatus.model_validate(data or {})
        orchestrator_restarts = m.orchestrator_restarts or 0
        attempt = m.orchestrator_attempt
        return cls(
            phase=m.phase or "",
            reason=m.reason or "",
            message=m.message or "",
            conditions=[_dump(c) for c in m.conditions],
            observed_generation=m.observed_generation or 0,
            start_time=m.start_time,
            completion_time=m.completion_time,
            trainer=GroupState(
                (m.restarts or 0) - orchestrator_restarts, m.trainer_attempt or 0, m.trainer_not_before
            ),
            orchestrator=GroupState(
                orchestrator_restarts,
                orchestrator_restarts if attempt is None else attempt,
                m.orchestrator_not_before,
            ),
            components=_dump(m.components) if m.components else {},
            progress=_dump(m.progress) if m.progress else None,
            step_advanced_at=m.last_step_advance_time,
            recent_step_seconds=tuple(m.recent_step_seconds),
            resumed_from=_dump(m.resumed_from) if m.resumed_from else None,
            startup=[_dump(t) for t in m.startup],
            trainer_stalled_attempt=m.trainer_stalled_attempt,
            gpu=GpuAccount((m.gpu_hours_used or 0.0) * 3600, m.gpus_in_use or 0, m.gpu_accounted_at),
            inference=_dump(m.inference) if m.inference else None,
        )

    def to_model(self) -> RLRunStatus:
        return RLRunStatus.model_validate(
            {
                "phase": self.phase or None,
                "reason": self.reason,
                "message": self.message,
                "conditions": self.conditions,
                "observedGeneration": self.observed_generation,
                "startTime": self.start_time,
                "completionTime": self.completion_time,
                "restarts": self.trainer.restarts + self.orchestrator.restarts,
                "trainerAttempt": self.trainer.attempt,
                "trainerNotBefore": self.trainer.not_before,
                "orchestratorRestarts": self.orchestrator.restarts,
                "orchestratorAttempt": self.orchestrator.attempt,
                "orchestratorNotBefore": self.orchestrator.not_before,
                "components": self.components,
                "progress": self.progress,
                "lastStepAdvanceTime": self.step_advanced_at,
                "recentStepSeconds": list(self.recent_step_seconds),
                "resumedFrom": self.resumed_from,
                "startup": self.startup,
                "trainerStalledAttempt": self.trainer_stalled_attempt,
                "gpuHoursUsed": round(self.gpu.gpu_hours, 6),
                "gpusInUse": self.gpu.gpus_in_use,
                "gpuAccountedAt": self.gpu.accounted_at,
                "inference": self.inference,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The status merge patch, written through `RLRunStatus`: every field the model has is present
        (null clears one), and the progress report keeps its nulls (a field the runtime stopped sending)."""
        model = self.to_model()
        out: dict[str, Any] = dict.fromkeys(
            (f.alias or name for name, f in RLRunStatus.model_fields.items()), None
        )
        out.update(_dump(model))
        if model.progress is not None:
            out["progress"] = model.progress.model_dump(by_alias=True, mode="json")
        return out

    def condition(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.conditions if c.get("type") == type_), None)

    def set_condition(self, type_: str, status: bool, reason: str, message: str, now: datetime) -> bool:
        """Upsert a condition; returns True when its status flipped (a transition worth an Event)."""
        value = "True" if status else "False"
        current = self.condition(type_)
        if current is None:
            self.conditions.append(
                {
                    "type": type_,
                    "status": value,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": fmt_time(now),
                }
            )
            return True
        flipped = current.get("status") != value
        current.update(status=value, reason=reason, message=message)
        if flipped or not current.get("lastTransitionTime"):
            current["lastTransitionTime"] = fmt_time(now)
        return flipped


def component_counts(children: Children) -> dict[str, dict[str, int]]:
    """Ready/desired per component, from the Deployments' and Jobs' own status."""
    counts: dict[str, dict[str, int]] = {}
    for component, key in STATUS_COMPONENT_KEYS.items():
        if component in children.deployments:
            dep = children.deployments[component]
            counts[key] = {"ready": dep.ready, "desired": dep.desired}
        elif component in children.jobs:
            job = children.jobs[component]
            desired = 0 if job.suspended or job.complete else job.parallelism
            counts[key] = {"ready": min(job.ready, desired), "desired": desired}
        else:
            counts[key] = {"ready": 0, "desired": 0}
    return counts


def readiness(children: Children) -> dict[str, tuple[bool, str, str]]:
    """Component -> (ready, reason, message) for the per-component conditions."""
    out: dict[str, tuple[bool, str, str]] = {}
    for component in COMPONENT_CONDITIONS:
        dep, job = children.deployments.get(component), children.jobs.get(component)
        if dep is not None:
            ok = dep.desired > 0 and dep.ready >= dep.desired
            out[component] = (
                ok,
                "AllReplicasReady" if ok else "ReplicasNotReady",
                f"{dep.ready}/{dep.desired} ready",
            )
        elif job is not None:
            if job.suspended:
                out[component] = (False, "Suspended", f"Job {job.name} is suspended")
            elif job.complete:
                out[component] = (False, "Completed", f"Job {job.name} completed (attempt {job.attempt})")
            else:
                ok = job.ready >= job.parallelism > 0
                reason = "AllPodsReady" if ok else "PodsNotReady"
                out[component] = (
                    ok,
                    reason,
                    f"{job.ready}/{job.parallelism} pods ready (attempt {job.attempt})",
                )
        else:
            out[component] = (False, "Missing", f"no {component} workload exists yet")
    return out


def weights_in_sync(inference: dict[str, Any] | None) -> tuple[bool, str, str] | None:
    """The `WeightsInSync` condition: every inference replica serves the newest exported weights (a lagging
    one gets no rollouts until it does); None before the orchestrator reported any replica."""
    if not inference or not inference.get("replicas"):
        return None
    version, replicas = inference.get("weightsVersion"), inference["replicas"]
    lagging = [r for r in replicas if not r.get("inSync")]
    if not lagging:
        return (
            True,
            "AllReplicasInSync",
            f"{len(replicas)}/{len(replicas)} replicas serve weights version {version}",
        )
    detail = ", ".join(
        f"{r.get('name')} serves {r['servedVersion']}" if r.get("servedVersion") is not None
        else f"{r.get('name')} gave no version ({r.get('error') or 'unreachable'})"
        for r in lagging
    )  # fmt: skip
    msg = f"{len(replicas) - len(lagging)}/{len(replicas)} replicas serve weights version {version}; {detail}"
    return False, "ReplicasLagging", msg
