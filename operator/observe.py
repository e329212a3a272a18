"""Sort the listed children of one RLRun into a small struct, once per reconcile pass.

Every decision of a pass (restart, completion, readiness, what to recreate) reads this struct, never the
raw lists, so the decisions are pure and table-testable (JobSet's `childJobs`). Pods are only looked at
for the two Job components, and only those owned by the *current* Job object: pods of a torn-down attempt
may linger while garbage collection catches up and must not count as a fresh failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rlrun.operator.names import (
    GPU_RESOURCE,
    LABEL_COMPONENT,
    LABEL_ORCHESTRATOR_ATTEMPT,
    LABEL_TRAINER_ATTEMPT,
)
from rlrun.operator.startup import GangTimes
from rlrun.runtime.config import ENVIRONMENT_INVALID, VOLUME_NOT_WRITABLE

ATTEMPT_LABELS = {"trainer": LABEL_TRAINER_ATTEMPT, "orchestrator": LABEL_ORCHESTRATOR_ATTEMPT}
START_FAILURES = (ENVIRONMENT_INVALID, VOLUME_NOT_WRITABLE)
"""Termination-message prefixes of a long-running role (a Deployment's pod) that no restart can fix: the
kubelet restarts such a pod forever (CrashLoopBackOff), so the operator reads the reason off the pod."""


@dataclass(frozen=True)
class JobState:
    """What a pass needs to know about one child Job."""

    name: str
    uid: str
    attempt: int
    suspended: bool
    parallelism: int
    active: int
    ready: int
    succeeded: int
    failed: int
    complete: bool
    failed_reason: str | None
    """Reason of the Job's `Failed=True` condition (e.g. BackoffLimitExceeded), None while not failed."""
    deleting: bool
    created: str | None = None
    """The Job's creationTimestamp: start-up timings are measured from it."""


@dataclass(frozen=True)
class DeploymentState:
    name: str
    desired: int
    ready: int


@dataclass(frozen=True)
class Children:
    """The observed children of one run: (kind, name) of everything, plus states of the workloads."""

    keys: frozenset[tuple[str, str]] = frozenset()
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(kind, name) -> the live object, for drift checks."""
    jobs: dict[str, JobState] = field(default_factory=dict)
    deployments: dict[str, DeploymentState] = field(default_factory=dict)
    """Long-running components: the env-worker Deployment and the inference StatefulSet (same counts)."""
    failed_pods: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Component -> names of Failed pods (evicted included) of the component's current Job."""
    pod_failures: dict[str, str] = field(default_factory=dict)
    """Failed pod name -> how it ended: each container's exit reason and code and its termination message
    (the tail of its log: containers set FallbackToLogsOnError), kept for Events before the pod is deleted."""
    gpus_in_use: int = 0
    """GPUs requested by the run's pods bound to a node and not finished (they hold them), any attempt."""
    trainer_gangs: dict[int, GangTimes] = field(default_factory=dict)
    """Per trainer attempt: when its pods were all scheduled and all started."""
    start_failures: dict[str, str] = field(default_factory=dict)
    """Deployment component -> the termination message of a pod that stopped with a START_FAILURES reason."""

    def has(self, kind: str, name: str) -> bool:
        return (kind, name) in self.keys


def _int(value: Any) -> int:
    return int(value or 0)


def _job_state(obj: dict[str, Any], component: str) -> JobState:
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    return JobState(
        name=meta["name"],
        uid=meta.get("uid", ""),
        attempt=_int((meta.get("labels") or {}).get(ATTEMPT_LABELS[component])),
        suspended=bool(spec.get("suspend")),
        parallelism=_int(spec.get("parallelism", 1)),
        active=_int(status.get("active")),
        ready=_int(status.get("ready")),
        succeeded=_int(status.get("succeeded")),
        failed=_int(status.get("failed")),
        complete="Complete" in conditions or "SuccessCriteriaMet" in conditions,
        failed_reason=(failed.get("reason") or "Failed") if failed else None,
        deleting=bool(meta.get("deletionTimestamp")),
        created=meta.get("creationTimestamp"),
    )


TERMINATION_TAIL_CHARS = 1500


def pod_failure(pod: dict[str, Any]) -> str:
    """'<container>: exit <code> (<reason>): <message tail>' for each terminated container, else the pod's
    own reason (an eviction has no container state)."""
    status = pod.get("status") or {}
    parts = []
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        term = (cs.get("state") or {}).get("terminated") or {}
        if not term or term.get("exitCode") == 0:
            continue
        text = f"{cs.get('name')}: exit {term.get('exitCode')} ({term.get('reason') or 'Error'})"
        if message := (term.get("message") or "").strip():
            text += ": " + message[-TERMINATION_TAIL_CHARS:]
        parts.append(text)
    if not parts:
        parts.append(f"{status.get('reason') or 'Failed'}: {status.get('message') or 'no container state'}")
    return "; ".join(parts)


def start_failure(pod: dict[str, Any]) -> str | None:
    """The termination message of a container (now or before its last restart) that starts with a
    START_FAILURES reason, else None."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (cs.get("state"), cs.get("lastState")):
            message = (((state or {}).get("terminated") or {}).get("message") or "").strip()
            if message.startswith(START_FAILURES):
                return message[-TERMINATION_TAIL_CHARS:]
    return None


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


def _latest(times: list[str | None]) -> datetime | None:
    """The last of `times`, or None when any is missing (the gang is not all there yet)."""
    if not times or any(t is None for t in times):
        return None
    return max(datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times if t)


def _gangs(pods: list[dict[str, Any]]) -> dict[int, GangTimes]:
    by_attempt: dict[int, list[dict[str, Any]]] = {}
    for pod in pods:
        by_attempt.setdefault(_int(_labels(pod).get(LABEL_TRAINER_ATTEMPT)), []).append(pod)
    return {
        attempt: GangTimes(
            len(members),
            _latest([_scheduled_at(p.get("status") or {}) for p in members]),
            _latest([_started_at(p.get("status") or {}) for p in members]),
        )
        for attempt, members in by_attempt.items()
    }


def _scheduled_at(status: dict[str, Any]) -> str | None:
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
    return cond.get("lastTransitionTime") if cond.get("status") == "True" else None


def _started_at(status: dict[str, Any]) -> str | None:
    """When the last container of the pod started running (None while one is not running)."""
    running = [(cs.get("state") or {}).get("running") for cs in status.get("containerStatuses") or []]
    if not running or not all(r and r.get("startedAt") for r in running):
        return None
    return max(r["startedAt"] for r in running)


def _holds_node(pod: dict[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return bool((pod.get("spec") or {}).get("nodeName")) and phase in ("Pending", "Running")


def _gpus(pod: dict[str, Any]) -> int:
    return sum(
        _int(((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE))
        for c in (pod.get("spec") or {}).get("containers") or []
    )


def observe(objects: list[dict[str, Any]], pods: list[dict[str, Any]] = ()) -> Children:  # type: ignore[assignment]
    """Sort children (any kinds) and the run's pods; objects being deleted still count as present
    (recreating a name that is still terminating would fail with a conflict)."""
    keys: set[tuple[str, str]] = set()
    live: dict[tuple[str, str], dict[str, Any]] = {}
    jobs: dict[str, JobState] = {}
    deployments: dict[str, DeploymentState] = {}
    for obj in objects:
        kind, meta = obj["kind"], obj["metadata"]
        keys.add((kind, meta["name"]))
        live[(kind, meta["name"])] = obj
        component = (meta.get("labels") or {}).get(LABEL_COMPONENT, "")
        if kind == "Job" and component in ATTEMPT_LABELS:
            jobs[component] = _job_state(obj, component)
        elif kind in ("Deployment", "StatefulSet"):
            spec, status = obj.get("spec", {}), obj.get("status", {})
            deployments[component] = DeploymentState(
                meta["name"], _int(spec.get("replicas", 1)), _int(status.get("readyReplicas"))
            )
    current_uids = {job.uid: component for component, job in jobs.items() if not job.deleting}
    failed: dict[str, list[str]] = {}
    failures: dict[str, str] = {}
    start_failures: dict[str, str] = {}
    for pod in pods:
        component = (pod["metadata"].get("labels") or {}).get(LABEL_COMPONENT, "")
        if component in deployments and (message := start_failure(pod)):
            start_failures.setdefault(component, message)
        if (pod.get("status") or {}).get("phase") != "Failed":
            continue
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("uid") in current_uids:
                failed.setdefault(current_uids[ref["uid"]], []).append(pod["metadata"]["name"])
                failures[pod["metadata"]["name"]] = pod_failure(pod)
    return Children(
        trainer_gangs=_gangs([p for p in pods if _labels(p).get(LABEL_COMPONENT) == "trainer"]),
        gpus_in_use=sum(_gpus(pod) for pod in pods if _holds_node(pod)),
        keys=frozenset(keys),
        objects=live,
        jobs=jobs,
        deployments=deployments,
        failed_pods={c: tuple(sorted(names)) for c, names in failed.items()},
        pod_failures=failures,
        start_failures=start_failures,
    )
