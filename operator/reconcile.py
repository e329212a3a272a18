"""One reconcile pass: `plan()` decides everything from data (pure); `apply()` carries it out.

`plan` takes the run's settings, a renderer, the observed children, the stored status and the latest
progress, and returns the new status plus the writes to make. The lifecycle rules live here, in order:
completion, deadline, group failures (restart with backoff or give up), stall, suspend, readiness; then
what to create, apply, patch and delete so the cluster matches the decision. Jobs are create-only (their
pod templates are immutable, and re-applying `suspend` would fight Kueue); everything else is applied
with server-side apply when missing or when the spec generation moved.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from rlrun.operator.names import (
    COMPONENT_ENV_WORKERS,
    COMPONENT_INFERENCE,
    COMPONENT_ORCHESTRATOR,
    COMPONENT_TRAINER,
    LABEL_COMPONENT,
    LABEL_KUEUE_QUEUE,
    LABEL_TRAINER_ATTEMPT,
)
from rlrun.operator.observe import LABEL_ORCHESTRATOR_ATTEMPT, Children
from rlrun.operator.reconcile_errors import clear_error
from rlrun.operator.restarts import GroupState, RestartPolicy, StallPolicy, on_group_failure, stalled
from rlrun.operator.status import (
    COMPONENT_CONDITIONS,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL,
    RunStatus,
    component_counts,
    parse_time,
    readiness,
    take_progress,
)
from rlrun.runtime.config import VOLUME_NOT_WRITABLE

GROUPS = (COMPONENT_TRAINER, COMPONENT_ORCHESTRATOR)
WORKLOADS = (COMPONENT_INFERENCE, COMPONENT_ENV_WORKERS, COMPONENT_TRAINER, COMPONENT_ORCHESTRATOR)
WORKLOAD_KINDS = ("Deployment", "Job")
PROGRESS_SECRET_SUFFIX = "-progress"
PROGRESS_TOKEN_KEY = "token"
ATTEMPT_ENV = "RLRUN_ATTEMPT"
SUSPENDED_MESSAGE = "spec.suspend is true: pods stopped, volume kept"
RESTART_POLL_SECONDS = 1.0
"""Requeue delay while a torn-down attempt's children are still being deleted."""


@dataclass(frozen=True)
class RunSettings:
    """The lifecycle knobs of one RLRun, read from its body (spec + metadata)."""

    name: str
    namespace: str
    uid: str
    generation: int
    suspend: bool = False
    queue_name: str | None = None
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stall: StallPolicy = field(default_factory=StallPolicy)

    @classmethod
    def from_body(cls, body: dict[str, Any], stall: StallPolicy | None = None) -> RunSettings:
        """Stall thresholds are operator settings (flags), not spec fields."""
        meta, spec = body["metadata"], body.get("spec") or {}
        fp = spec.get("failurePolicy") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            suspend=bool(spec.get("suspend")),
            queue_name=spec.get("queueName") or None,
            active_deadline_seconds=spec.get("activeDeadlineSeconds"),
            ttl_seconds_after_finished=spec.get("ttlSecondsAfterFinished"),
            restart=RestartPolicy(
                max_restarts=int(fp.get("maxRestarts", 3)),
                backoff_base_seconds=float(fp.get("backoffSeconds", 10)),
                backoff_cap_seconds=float(fp.get("backoffMaxSeconds", 300)),
            ),
            stall=stall or StallPolicy(),
        )


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: RunStatus
    apply: list[dict[str, Any]] = field(default_factory=list)
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)
    """(apiVersion, kind, name) to delete, dependants in the background."""
    suspend: list[tuple[str, bool]] = field(default_factory=list)
    """(Job name, suspend) merge patches."""
    ensure_progress_secret: bool = False
    events: list[Event] = field(default_factory=list)
    delete_run: bool = False
    requeue_after: float | None = None

    def requeue(self, seconds: float) -> None:
        seconds = max(seconds, 0.1)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


def _component(obj: dict[str, Any]) -> str:
    return (obj["metadata"].get("labels") or {}).get(LABEL_COMPONENT, "")


def _containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job["spec"]["template"]["spec"]["containers"]


def _set_env(container: dict[str, Any], name: str, value: str | None = None, **source: Any) -> None:
    env = [e for e in container.get("env") or [] if e.get("name") != name]
    env.append({"name": name, "value": value} if source == {} else {"name": name, "valueFrom": source})
    container["env"] = env


def _label(obj: dict[str, Any], key: str, value: str) -> None:
    obj["metadata"].setdefault("labels", {})[key] = value
    obj["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})[key] = value


def finish_job(
    job: dict[str, Any], settings: RunSettings, attempt: int, progress_url: str | None
) -> dict[str, Any]:
    """Stamp a rendered Job with what only the operator knows: the attempt (label + RLRUN_ATTEMPT), the
    progress endpoint and token (orchestrator), the Kueue queue, and whether it starts suspended."""
    job = copy.deepcopy(job)
    component = _component(job)
    trainer = component == COMPONENT_TRAINER
    _label(job, LABEL_TRAINER_ATTEMPT if trainer else LABEL_ORCHESTRATOR_ATTEMPT, str(attempt))
    for container in _containers(job):
        _set_env(container, ATTEMPT_ENV, str(attempt))
        if component == COMPONENT_ORCHESTRATOR:
            secret = f"{settings.name}{PROGRESS_SECRET_SUFFIX}"
            _set_env(
                container, "RLRUN_PROGRESS_TOKEN", secretKeyRef={"name": secret, "key": PROGRESS_TOKEN_KEY}
            )
            if progress_url:
                path = f"/v1/namespaces/{settings.namespace}/rlruns/{settings.name}/progress"
                _set_env(container, "RLRUN_PROGRESS_URL", progress_url.rstrip("/") + path)
    kueue = trainer and settings.queue_name
    if kueue:
        job["metadata"]["labels"][LABEL_KUEUE_QUEUE] = settings.queue_name
    job["spec"]["suspend"] = bool(settings.suspend or kueue)
    return job


def _group_failure(children: Children, group: str, attempt: int) -> str | None:
    job = children.jobs.get(group)
    if job is None or job.deleting or job.attempt != attempt or job.suspended:
        return None
    if pods := children.failed_pods.get(group):
        return f"pod {pods[0]} failed: {children.pod_failures.get(pods[0], 'no detail')}"
    if job.failed_reason:
        return f"Job {job.name} failed: {job.failed_reason}"
    return None


def _terminate(plan: Plan, phase: str, reason: str, message: str, now: datetime) -> None:
    st = plan.status
    st.phase, st.reason, st.message, st.completion_time = phase, reason, message, now
    plan.events.append(Event("Normal" if phase == SUCCEEDED else "Warning", reason, message))


def plan(
    settings: RunSettings,
    render: Callable[[int], list[dict[str, Any]]],
    children: Children,
    stored: RunStatus,
    report: dict[str, Any] | None,
    now: datetime,
    progress_url: str | None = None,
) -> Plan:
    """Decide one pass. `render(trainer_attempt)` returns the desired children (pure renderers);
    `report` is the newest progress report the intake holds (folded in when newer than status)."""
    st = replace(stored, conditions=[dict(c) for c in stored.conditions])
    p = Plan(status=st)
    before = stored.phase
    take_progress(st, report, now)
    if st.start_time is None:
        st.start_time = now
    clear_error(st, now)  # this pass's writes are about to succeed, or the runner sets it again

    if st.phase not in TERMINAL:
        _decide_lifecycle(p, settings, children, now)

    desired = render(st.trainer.attempt)
    if st.phase in TERMINAL:
        _release(p, settings, desired, children, now)
    else:
        _converge(p, settings, desired, children, stored, now, progress_url)

    st.components = component_counts(children)
    ready = readiness(children)
    for component, cond in COMPONENT_CONDITIONS.items():
        ok, reason, message = ready[component]
        if st.phase in TERMINAL and reason == "Missing":  # deleted by _release, not yet to come
            reason, message = "Released", f"run {st.phase}: workload released"
        st.set_condition(cond, ok, reason, message, now)
    all_ready = all(ok for ok, _, _ in ready.values())
    if st.phase not in TERMINAL:
        if settings.suspend:
            st.phase, st.reason, st.message = (
                SUSPENDED,
                "Suspended",
                "spec.suspend is true: pods stopped, volume kept",
            )
        elif all_ready:
            st.phase, st.reason, st.message = RUNNING, "Running", "all components ready"
        elif st.phase == RUNNING:  # once running, a restart or a lost replica is a condition, not a phase
            if st.reason != "Restarting":
                waiting = sorted(c for c, (ok, _, _) in ready.items() if not ok)
                st.reason, st.message = "ComponentsNotReady", f"not ready: {', '.join(waiting)}"
        else:
            st.phase, st.reason, st.message = PENDING, "Starting", "waiting for components to become ready"
    st.set_condition("Ready", all_ready and st.phase == RUNNING, st.reason, st.message, now)
    if st.phase != before:
        p.events.insert(
            0, Event("Normal", st.phase, f"phase {before or '(new)'} -> {st.phase}: {st.message}")
        )
    st.observed_generation = settings.generation
    return p


def _decide_lifecycle(p: Plan, settings: RunSettings, children: Children, now: datetime) -> None:
    st = p.status
    orch = children.jobs.get(COMPONENT_ORCHESTRATOR)
    if orch is not None and orch.complete and orch.attempt == st.orchestrator.attempt:
        _terminate(p, SUCCEEDED, "Completed", "the orchestrator finished (max steps reached)", now)
        return
    if settings.active_deadline_seconds is not None and st.start_time is not None:
        elapsed = (now - st.start_time).total_seconds()
        if elapsed >= settings.active_deadline_seconds:
            msg = f"ran {elapsed:.0f}s, past spec.activeDeadlineSeconds={settings.active_deadline_seconds}"
            _terminate(p, FAILED, "DeadlineExceeded", msg, now)
            return
        p.requeue(settings.active_deadline_seconds - elapsed)
    if settings.suspend:
        return
    causes = {group: _group_failure(children, group, _group(st, group).attempt) for group in GROUPS}
    if st.progress is not None and st.phase == RUNNING and causes[COMPONENT_TRAINER] is None:
        # Everything read from status: any replica, restarted or not, reaches the same verdict.
        advanced = st.step_advanced_at or parse_time(st.progress.get("updatedAt"))
        starts = [t for t in (advanced, st.trainer.not_before) if t is not None]
        since = max(starts) if starts else None
        history = list(st.recent_step_seconds)
        if not history and st.progress.get("stepSeconds") is not None:
            history = [float(st.progress["stepSeconds"])]
        is_stalled = stalled(settings.stall, history, since, now)
        step = st.progress.get("step")
        msg = f"no step advance since step {step} at {since.isoformat() if since else '-'}"
        reason = "NoStepAdvance" if is_stalled else "Progressing"
        if st.set_condition("Stalled", is_stalled, reason, msg, now) and is_stalled:
            p.events.append(Event("Warning", "Stalled", msg))
        if is_stalled:
            causes[COMPONENT_TRAINER] = f"stalled: {msg}"
    for group, cause in causes.items():
        if cause is None:
            continue
        if VOLUME_NOT_WRITABLE in cause:  # no restart can fix the volume: say so now, spend none
            _terminate(p, FAILED, VOLUME_NOT_WRITABLE, cause, now)
            return
        decision = on_group_failure(settings.restart, _group(st, group), now, group, cause)
        if decision.action == "give_up":
            reason = (
                "TrainerRestartLimitExceeded"
                if group == COMPONENT_TRAINER
                else "OrchestratorRestartLimitExceeded"
            )
            _terminate(p, FAILED, reason, decision.message, now)
            return
        if group == COMPONENT_TRAINER:
            st.trainer = decision.state
        else:
            st.orchestrator = decision.state
        st.reason, st.message = "Restarting", decision.message
        p.events.append(Event("Warning", f"{group.capitalize()}Restart", decision.message))


def _group(st: RunStatus, group: str) -> GroupState:
    return st.trainer if group == COMPONENT_TRAINER else st.orchestrator


def _release(
    p: Plan, settings: RunSettings, desired: list[dict[str, Any]], children: Children, now: datetime
) -> None:
    """Terminal: remove every workload (GPUs free), keep the volume, config and Services; count TTL down."""
    st = p.status
    for obj in desired:
        component, kind, name = _component(obj), obj["kind"], obj["metadata"]["name"]
        if kind not in WORKLOAD_KINDS or component not in WORKLOADS or not children.has(kind, name):
            continue
        if component == COMPONENT_ORCHESTRATOR and st.phase == SUCCEEDED:
            continue  # a finished Job holds no resources; keep it for its logs
        p.delete.append((obj["apiVersion"], kind, name))
    if settings.ttl_seconds_after_finished is not None and st.completion_time is not None:
        left = settings.ttl_seconds_after_finished - (now - st.completion_time).total_seconds()
        if left <= 0:
            p.delete_run = True
        else:
            p.requeue(left)


def _converge(
    p: Plan,
    settings: RunSettings,
    desired: list[dict[str, Any]],
    children: Children,
    stored: RunStatus,
    now: datetime,
    progress_url: str | None,
) -> None:
    st = p.status
    spec_moved = stored.observed_generation != settings.generation
    p.ensure_progress_secret = not children.has("Secret", f"{settings.name}{PROGRESS_SECRET_SUFFIX}")
    for obj in desired:
        kind, name, component = obj["kind"], obj["metadata"]["name"], _component(obj)
        if kind == "Job" and component in GROUPS:
            _converge_job(p, settings, obj, children, _group(st, component), now, progress_url)
            continue
        if kind == "Deployment" and settings.suspend:
            obj = copy.deepcopy(obj)
            obj["spec"]["replicas"] = 0
        if spec_moved or not children.has(kind, name):
            p.apply.append(obj)


def _converge_job(
    p: Plan,
    settings: RunSettings,
    obj: dict[str, Any],
    children: Children,
    group: GroupState,
    now: datetime,
    progress_url: str | None,
) -> None:
    component, name = _component(obj), obj["metadata"]["name"]
    job = children.jobs.get(component)
    if job is not None and (job.attempt < group.attempt or job.deleting):
        if not job.deleting:
            p.delete.append((obj["apiVersion"], "Job", name))  # a torn-down attempt: the whole group goes
        p.requeue(RESTART_POLL_SECONDS)
        return
    if job is None and children.has("Job", name):
        p.requeue(RESTART_POLL_SECONDS)  # an unlabelled leftover: wait for it to be gone
        return
    if job is None:
        if group.not_before is not None and now < group.not_before:
            p.requeue((group.not_before - now).total_seconds())
            return
        p.create.append(finish_job(obj, settings, group.attempt, progress_url))
        return
    queued = component == COMPONENT_TRAINER and settings.queue_name
    if settings.suspend and not job.suspended:
        p.suspend.append((name, True))
    elif not settings.suspend and job.suspended and not queued:
        p.suspend.append((name, False))
