"""One reconcile pass: `plan()` decides everything from data (pure); `apply()` carries it out.

`plan` takes the run's settings, a renderer, the observed children, the stored status and the latest
progress, and returns the new status plus the writes to make. The lifecycle rules live here, in order:
completion, deadline, group failures (restart with backoff or give up), stall, suspend, readiness; then
what to create, apply, patch and delete so the cluster matches the decision. The renderer is the only
producer of children: what `plan` creates or applies is exactly what it rendered for the recorded
attempts. Jobs and the progress Secret are create-only (pod templates are immutable, re-applying
`suspend` would fight Kueue, and re-applying the Secret would rotate the token); everything else is
applied with server-side apply when missing or when the spec generation moved.

Kueue rule (written once, in render.common.queued): only the trainer Job is queued. It is created with
the queue label and `suspend: true`; from then on Kueue owns its `suspend` and the operator only ever
suspends it (spec.suspend), never resumes it. The orchestrator Job is not queued: no label, never
suspended unless the run is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from rlrun.operator.api import RLRun, RLRunSpec, to_runtime_config
from rlrun.operator.budget import BUDGET_EXHAUSTED, account, seconds_left, spent
from rlrun.operator.drift import difference
from rlrun.operator.lineage import FORK_FAILED, Lineage, fork_problem, parent_claim, protection_patch
from rlrun.operator.names import (
    COMPONENT_ENV_WORKERS,
    COMPONENT_INFERENCE,
    COMPONENT_ORCHESTRATOR,
    COMPONENT_TRAINER,
    LABEL_COMPONENT,
)
from rlrun.operator.observe import Children
from rlrun.operator.reconcile_errors import clear_error
from rlrun.operator.render.common import claim_name, queued
from rlrun.operator.restarts import GroupState, StallPolicy, on_group_failure, stalled
from rlrun.operator.startup import note_previous_stacks
from rlrun.operator.startup import record as record_startup
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
    weights_in_sync,
)
from rlrun.runtime.config import VOLUME_NOT_WRITABLE, forensics_dir

GROUPS = (COMPONENT_TRAINER, COMPONENT_ORCHESTRATOR)
WORKLOADS = (COMPONENT_INFERENCE, COMPONENT_ENV_WORKERS, COMPONENT_TRAINER, COMPONENT_ORCHESTRATOR)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
CREATE_ONLY = ("Job", "Secret")
NO_DRIFT_REPAIR = ("PersistentVolumeClaim",)
"""Kinds never re-applied over a hand edit: a PVC may be expanded by its users, and never shrinks."""
STALLED_CAUSE = "stalled: "
"""Prefix of the trainer failure cause a stall gives; the restart it leads to records the stalled attempt."""
SUSPENDED_MESSAGE = "spec.suspend is true: pods stopped, volume kept"
RESTART_POLL_SECONDS = 1.0
"""Requeue delay while a torn-down attempt's children are still being deleted."""


@dataclass(frozen=True)
class RunSettings:
    """One RLRun as a pass sees it: the validated object (every default comes from the API model) plus
    the operator's stall thresholds (flags, not spec fields)."""

    run: RLRun
    stall: StallPolicy = field(default_factory=StallPolicy)
    lineage: Lineage = field(default_factory=Lineage)
    """A fork's parent and its volume, as read this pass (empty for a run without spec.resumeFrom)."""

    @property
    def spec(self) -> RLRunSpec:
        return self.run.spec

    @property
    def generation(self) -> int:
        return self.run.metadata.generation or 0


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
    relabel: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    """(Job name, labels) merge patches: a Job's template is immutable, its labels are not."""
    protect: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(PVC name, strategic-merge patch): a fork becomes an owner of its parent's volume."""
    events: list[Event] = field(default_factory=list)
    startup_completed: dict[str, Any] | None = None
    """The trainer attempt's start-up entry that became complete in this pass (observed once)."""
    delete_run: bool = False
    requeue_after: float | None = None

    @property
    def writes_children(self) -> bool:
        """Whether the pass changes children after its status write (any of those writes may fail)."""
        return bool(self.create or self.apply or self.delete or self.suspend or self.relabel or self.protect)

    def requeue(self, seconds: float) -> None:
        seconds = max(seconds, 0.1)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


def _component(obj: dict[str, Any]) -> str:
    return (obj["metadata"].get("labels") or {}).get(LABEL_COMPONENT, "")


Render = Callable[[int, int], list[dict[str, Any]]]
"""(trainer attempt, orchestrator attempt) -> every desired child, exactly as it is to be written."""


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
    render: Render,
    children: Children,
    stored: RunStatus,
    report: dict[str, Any] | None,
    now: datetime,
) -> Plan:
    """Decide one pass. `render` returns the desired children for the recorded attempts (pure);
    `report` is the newest progress report the intake holds (folded in when newer than status)."""
    st = replace(stored, conditions=[dict(c) for c in stored.conditions])
    p = Plan(status=st)
    before = stored.phase
    take_progress(st, report, now)
    if (sync := weights_in_sync(st.inference)) is not None:
        st.set_condition("WeightsInSync", *sync, now)
    if st.start_time is None:
        st.start_time = now
    account(st.gpu, children.gpus_in_use, now)  # terminal too: pods still terminating hold their GPUs
    _startup_timings(p, children)

    if st.phase not in TERMINAL:
        _decide_lifecycle(p, settings, children, now)

    desired = render(st.trainer.attempt, st.orchestrator.attempt)
    if st.phase in TERMINAL:
        _release(p, settings, desired, children, now)
    else:
        _converge(p, settings, desired, children, stored, now)

    st.components = component_counts(children)
    ready = readiness(children)
    for component, cond in COMPONENT_CONDITIONS.items():
        ok, reason, message = ready[component]
        if st.phase in TERMINAL and reason == "Missing":  # deleted by _release, not yet to come
            reason, message = "Released", f"run {st.phase}: workload released"
        st.set_condition(cond, ok, reason, message, now)
    all_ready = all(ok for ok, _, _ in ready.values())
    if st.phase not in TERMINAL:
        if settings.spec.suspend:
            st.phase, st.reason, st.message = SUSPENDED, "Suspended", SUSPENDED_MESSAGE
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
    if not p.writes_children:  # nothing can fail after the status write; else the runner clears it after
        clear_error(st, now)
    return p


def _decide_lifecycle(p: Plan, settings: RunSettings, children: Children, now: datetime) -> None:
    st = p.status
    if not _admit_fork(p, settings, now):
        return
    orch = children.jobs.get(COMPONENT_ORCHESTRATOR)
    if orch is not None and orch.complete and orch.attempt == st.orchestrator.attempt:
        _terminate(p, SUCCEEDED, "Completed", "the orchestrator finished (max steps reached)", now)
        return
    budget = settings.spec.budget
    if why := spent(budget, st.gpu, st.start_time, now):
        account(st.gpu, children.gpus_in_use, now, settle=True)
        msg = f"{why}; the trainer checkpoints the step in flight as its pods stop"
        _terminate(p, SUCCEEDED, BUDGET_EXHAUSTED, msg, now)
        return
    if (left := seconds_left(budget, st.gpu, st.start_time, now)) is not None:
        p.requeue(left)
    deadline = settings.spec.active_deadline_seconds
    if deadline is not None and st.start_time is not None:
        elapsed = (now - st.start_time).total_seconds()
        if elapsed >= deadline:
            msg = f"ran {elapsed:.0f}s, past spec.activeDeadlineSeconds={deadline}"
            _terminate(p, FAILED, "DeadlineExceeded", msg, now)
            return
        p.requeue(deadline - elapsed)
    if settings.spec.suspend:
        return
    for component, message in sorted(children.start_failures.items()):  # a restart cannot fix these
        _terminate(p, FAILED, message.split(":", 1)[0], f"{component}: {message}", now)
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
            p.events.append(Event("Warning", "Stalled", f"{msg}; {_stack_dumps(settings, st)}"))
        if is_stalled:
            causes[COMPONENT_TRAINER] = f"{STALLED_CAUSE}{msg}"
    for group, cause in causes.items():
        if cause is None:
            continue
        if VOLUME_NOT_WRITABLE in cause:  # no restart can fix the volume: say so now, spend none
            _terminate(p, FAILED, VOLUME_NOT_WRITABLE, cause, now)
            return
        decision = on_group_failure(settings.spec.failure_policy, _group(st, group), now, group, cause)
        if decision.action == "give_up":
            reason = (
                "TrainerRestartLimitExceeded"
                if group == COMPONENT_TRAINER
                else "OrchestratorRestartLimitExceeded"
            )
            _terminate(p, FAILED, reason, decision.message, now)
            return
        if group == COMPONENT_TRAINER:
            if cause.startswith(STALLED_CAUSE):
                st.trainer_stalled_attempt = st.trainer.attempt
            st.trainer = decision.state
        else:
            st.orchestrator = decision.state
        st.reason, st.message = "Restarting", decision.message
        p.events.append(Event("Warning", f"{group.capitalize()}Restart", decision.message))


def _startup_timings(p: Plan, children: Children) -> None:
    st, job = p.status, children.jobs.get(COMPONENT_TRAINER)
    if job is None or job.deleting:
        return
    runtime = (st.progress or {}).get("trainerStartup")
    gang = children.trainer_gangs.get(job.attempt)
    st.startup, done = record_startup(
        st.startup, job.attempt, parse_time(job.created), job.parallelism, gang, runtime
    )
    if done:
        p.events.append(Event("Normal", "StartupTimings", done))
        p.startup_completed = next(e for e in st.startup if e.get("attempt") == job.attempt)
    st.startup, stacks = note_previous_stacks(st.startup, job.attempt, runtime)
    if stacks and st.trainer_stalled_attempt == job.attempt - 1:
        p.events.append(
            Event("Warning", "StallDiagnosed", f"trainer attempt {job.attempt - 1} stalled; {stacks}")
        )


def _admit_fork(p: Plan, settings: RunSettings, now: datetime) -> bool:
    """A fork (spec.resumeFrom) whose parent is unfit fails now, precisely; an admitted one records its
    parent in status (with an Event, once) and keeps its parent's volume protected. False: terminated."""
    run, st = settings.run, p.status
    fork = run.spec.resume_from
    if fork is None:
        return True
    if st.resumed_from is None:  # admitted once: a parent deleted later must not fail a running fork
        if problem := fork_problem(run, settings.lineage):
            _terminate(p, FAILED, FORK_FAILED, problem, now)
            return False
        st.resumed_from = fork.model_dump(by_alias=True)
        claim = parent_claim(run) or run.spec.storage.existing_claim
        msg = f"forked from RLRun {fork.run} checkpoint step {fork.step}; volume {claim} shared"
        p.events.append(Event("Normal", "Forked", msg))
    if (patch := protection_patch(run, settings.lineage)) and (claim := parent_claim(run)):
        p.protect.append((claim, patch))
    return True


def _stack_dumps(settings: RunSettings, st: RunStatus) -> str:
    """Where the stalled trainer group's stacks land: its pods are deleted for the restart, and each pod's
    log wrapper (runtime/podlog.py) has every process dump its stacks before SIGTERM reaches it."""
    attempt = st.trainer.attempt
    run_dir = to_runtime_config(settings.run.metadata.name, settings.spec).run_dir
    return (
        f"the stopping trainer pods of attempt {attempt} dump every process's stacks to "
        f"{forensics_dir(run_dir, attempt)}/ on volume {claim_name(settings.run)} (a rank that left none was "
        f"not running: stopped, or wedged holding the GIL); attempt {attempt + 1} names the suspect at its "
        "start (Event StallDiagnosed)"
    )


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
        job = children.jobs.get(component)
        if component == COMPONENT_ORCHESTRATOR and job is not None and job.complete:
            continue  # a finished Job holds no resources; keep it for its logs
        p.delete.append((obj["apiVersion"], kind, name))
    ttl = settings.spec.ttl_seconds_after_finished
    if ttl is not None and st.completion_time is not None:
        left = ttl - (now - st.completion_time).total_seconds()
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
) -> None:
    st = p.status
    spec_moved = stored.observed_generation != settings.generation
    for obj in desired:
        kind, name, component = obj["kind"], obj["metadata"]["name"], _component(obj)
        if kind == "Job" and component in GROUPS:
            _converge_job(p, settings, obj, children, _group(st, component), now)
        elif kind in CREATE_ONLY:
            if not children.has(kind, name):
                p.create.append(obj)
        elif spec_moved or not children.has(kind, name):
            p.apply.append(obj)
        elif kind not in NO_DRIFT_REPAIR and (path := difference(obj, children.objects[(kind, name)])):
            p.apply.append(obj)
            p.events.append(
                Event("Warning", "DriftReverted", f"{kind} {name}: {path} was changed; re-applied")
            )


def _converge_job(
    p: Plan,
    settings: RunSettings,
    obj: dict[str, Any],
    children: Children,
    group: GroupState,
    now: datetime,
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
        p.create.append(obj)
        return
    live_labels = children.objects[("Job", name)]["metadata"].get("labels") or {}
    if path := difference(obj["metadata"]["labels"], live_labels, "metadata.labels"):
        p.relabel.append((name, obj["metadata"]["labels"]))
        p.events.append(Event("Warning", "DriftReverted", f"Job {name}: {path} was changed; relabelled"))
    suspend = settings.spec.suspend
    if suspend and not job.suspended:
        p.suspend.append((name, True))
    elif not suspend and job.suspended and not queued(settings.spec, component):
        p.suspend.append((name, False))  # a queued Job is Kueue's to resume
