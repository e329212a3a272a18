"""The Reconciler: drives reconcile passes, one at a time per run, coalesced, timed, crash-safe.

Any number of triggers (kopf create/update/resume, the timer, child Job/Pod/Deployment events, a progress
report, a requeue) call `poke()`. A pass already running for that run just marks it dirty and runs once
more when it ends, so a burst of child events costs one or two passes, never one each. A pass is:
read the RLRun, list its children, `plan()`, then write in this order:

1. ONE status write, conditional on the resourceVersion the pass read (optimistic concurrency). The
   decision (a restart counted, the next attempt and its backoff, a terminal phase) is recorded before
   anything acts on it; a conflict means another writer (a second operator, a user) moved the run, so the
   pass is dropped unwritten and planned again from a fresh read.
2. The Events announcing the recorded decision (never one for a state that failed to persist; a
   conflicting duplicate pass writes none, so two operators never post an Event twice).
3. The child writes that carry the decision out: deletes, the progress Secret, creates, applies, Job
   suspend patches. Each is idempotent and driven by the recorded status, so a crash at any point is
   finished by the next pass: a torn-down attempt is never recreated, a restart never lost or counted twice.

`active()` gates every write: a standby replica (see `peering.py`) runs no pass at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from rlrun.operator import startup_metrics
from rlrun.operator.api import RLRun
from rlrun.operator.kube import Kube
from rlrun.operator.lineage import Lineage, parent_claim
from rlrun.operator.names import (
    PROGRESS_TOKEN_KEY,
    SUFFIX_ORCHESTRATOR,
    SUFFIX_PROGRESS,
    SUFFIX_TRAINER,
    child_name,
)
from rlrun.operator.observe import observe
from rlrun.operator.progress import ProgressStore
from rlrun.operator.reconcile import Plan, RunSettings, plan
from rlrun.operator.reconcile_errors import CONDITION as ERROR_CONDITION
from rlrun.operator.reconcile_errors import clear_error, describe_error, report_error
from rlrun.operator.render import render_children
from rlrun.operator.restarts import StallPolicy
from rlrun.operator.status import RunStatus

log = logging.getLogger("rlrun.operator")

RECONCILES = Counter("rlrun_reconcile_total", "Reconcile passes by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "rlrun_reconcile_duration_seconds",
    "Wall time of one reconcile pass (read, plan, writes).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

RUN_RESTARTS = Gauge(
    "rlrun_run_restarts",
    "Restarts of a run's trainer group or orchestrator: a mirror of RLRun status for dashboards (status and "
    "Events stay the source of truth).",
    ["namespace", "run", "component"],
)

Key = tuple[str, str]
CREATE_ONLY_CHILDREN = (
    ("batch/v1", "Job", SUFFIX_TRAINER),
    ("batch/v1", "Job", SUFFIX_ORCHESTRATOR),
    ("v1", "Secret", SUFFIX_PROGRESS),
)
"""Children never re-applied: when their labels were edited away they are found by owner reference."""


class StaleRead(Exception):
    """The RLRun changed between the pass's read and its status write (HTTP 409): nothing was written."""


@dataclass
class _RunState:
    running: bool = False
    dirty: bool = False
    requeue: asyncio.TimerHandle | None = None


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        store: ProgressStore,
        stall: StallPolicy,
        progress_url: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.kube, self.store, self.stall, self.progress_url, self.clock = (
            kube,
            store,
            stall,
            progress_url,
            clock,
        )
        self.active = active
        """False on a standby replica: no pass runs, nothing is written."""
        self._runs: dict[Key, _RunState] = {}
        self._tokens: dict[Key, bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def token_of(self, namespace: str, secret: str, refresh: bool = False) -> bytes | None:
        """The run's progress token, cached; `refresh` re-reads the Secret (a recreated run has a new one)."""
        key = (namespace, secret)
        if refresh or key not in self._tokens:
            self._tokens.pop(key, None)
            value = await asyncio.to_thread(self.kube.secret_value, namespace, secret, PROGRESS_TOKEN_KEY)
            if value is None:
                return None
            self._tokens[key] = value
        return self._tokens[key]

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        for component in ("trainer", "orchestrator"):
            with contextlib.suppress(KeyError):
                RUN_RESTARTS.remove(namespace, name, component)
        startup_metrics.forget(namespace, name)
        state = self._runs.pop(key, None)
        self._tokens.pop((namespace, f"{name}{SUFFIX_PROGRESS}"), None)  # a new run, a new Secret
        if state and state.requeue:
            state.requeue.cancel()
        self.store.forget(key)

    async def tick_forever(self, interval: float) -> None:
        """The level-based safety net: every known run gets a pass each `interval` seconds, so a missed
        watch event (or a hand-deleted Service, which is not watched) is repaired within one period."""
        while True:
            await asyncio.sleep(interval)
            for key in list(self._runs):
                self.poke_soon(*key)

    def poke_soon(self, namespace: str, name: str) -> None:
        """Fire-and-forget trigger, for callers that must not wait for the pass (HTTP handlers)."""
        task = asyncio.get_running_loop().create_task(self.poke(namespace, name))
        self._tasks.add(task)  # keep a reference until done (the loop holds tasks only weakly)
        task.add_done_callback(self._tasks.discard)

    async def poke(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        state = self._runs.setdefault(key, _RunState())
        state.dirty = True
        if state.running or not self.active():
            return  # a standby remembers the run (the tick passes it once active) but never writes
        state.running = True
        try:
            while state.dirty:
                state.dirty = False
                await self._pass(key, state)
        finally:
            state.running = False

    async def _pass(self, key: Key, state: _RunState) -> None:
        started = time.perf_counter()
        try:
            requeue = await self._reconcile(key)
            RECONCILES.labels("ok").inc()
        except StaleRead as e:
            RECONCILES.labels("conflict").inc()
            log.info("rlrun %s/%s changed during the pass (%s); planning again", *key, e)
            state.dirty = True
            requeue = None
        except Exception:
            RECONCILES.labels("error").inc()
            log.exception("reconcile of rlrun %s/%s failed; the timer retries it", *key)
            requeue = None
        finally:
            RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if state.requeue is not None:
            state.requeue.cancel()
            state.requeue = None
        if requeue is not None:
            loop = asyncio.get_running_loop()
            state.requeue = loop.call_later(requeue, self.poke_soon, *key)

    async def _reconcile(self, key: Key) -> float | None:
        namespace, name = key
        body = await asyncio.to_thread(self.kube.get_run, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.forget(*key)
            return None
        try:
            run = RLRun.model_validate(body)
        except ValidationError as e:
            # The CRD's CEL rules normally stop this at admission; say what is wrong where users look.
            await asyncio.to_thread(
                self.kube.patch_run_status,
                namespace,
                name,
                {"phase": "Failed", "reason": "InvalidSpec", "message": str(e)[:4000]},
            )
            return None
        settings = RunSettings(run, self.stall, await asyncio.to_thread(self._lineage, run))
        stored = RunStatus.from_dict(body.get("status"))
        try:
            # A run that never had a pass has nothing to find by owner reference (saves 3 lists).
            expected = tuple(
                (api_version, kind, child_name(name, suffix))
                for api_version, kind, suffix in CREATE_ONLY_CHILDREN
                if stored.start_time is not None
            )
            objects, pods = await asyncio.to_thread(
                self.kube.list_children, namespace, name, run.metadata.uid or "", expected
            )
            children = observe(objects, pods)
            report = self.store.newest(key, stored.progress, stored.orchestrator.attempt)
            secret = child_name(name, SUFFIX_PROGRESS)
            token = None if children.has("Secret", secret) else secrets.token_urlsafe(32)

            def render(trainer_attempt: int, orchestrator_attempt: int) -> list[dict[str, Any]]:
                return render_children(
                    run,
                    trainer_attempt=trainer_attempt,
                    orchestrator_attempt=orchestrator_attempt,
                    progress_url=self.progress_url,
                    progress_token=token,
                )

            decided = plan(settings, render, children, stored, report, self.clock())
            await asyncio.to_thread(self._write, body, decided)
        except StaleRead:
            raise
        except Exception as exc:
            await asyncio.to_thread(self._write_error, body, stored, exc)
            raise
        return decided.requeue_after

    def _lineage(self, run: RLRun) -> Lineage:
        """A fork's parent RLRun and the PVC it protects (two reads, only for a run with resumeFrom)."""
        fork, namespace = run.spec.resume_from, run.metadata.namespace or "default"
        if fork is None:
            return Lineage()
        body = self.kube.get_run(namespace, fork.run)
        parent = RLRun.model_validate(body) if body is not None else None
        claim = parent_claim(run)
        return Lineage(
            parent, self.kube.find("v1", "PersistentVolumeClaim", namespace, claim) if claim else None
        )

    def _write_error(self, body: dict[str, Any], stored: RunStatus, exc: Exception) -> None:
        """Show a failed pass on the RLRun: the condition first, then (only if it changed) the Event.
        Best effort: the pass's own error is what gets raised and logged."""
        meta = body["metadata"]
        report = report_error(stored, exc, self.clock())
        try:
            if report.conditions is not None:
                self.kube.patch_run_status(meta["namespace"], meta["name"], {"conditions": report.conditions})
            if report.event is not None:
                self.kube.event(body, *report.event)
        except Exception as e:
            log.warning(
                "rlrun %s/%s: could not record the reconcile error on the run: %s",
                meta["namespace"],
                meta["name"],
                describe_error(e)[1],
            )

    def _write(self, body: dict[str, Any], p: Plan) -> None:
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        try:
            self.kube.patch_run_status(ns, name, p.status.to_dict(), meta.get("resourceVersion"))
        except ApiException as exc:
            if exc.status == 409:
                raise StaleRead(f"resourceVersion {meta.get('resourceVersion')} is stale") from exc
            exc.add_note("write the status failed")
            raise
        RUN_RESTARTS.labels(ns, name, "trainer").set(p.status.trainer.restarts)
        RUN_RESTARTS.labels(ns, name, "orchestrator").set(p.status.orchestrator.restarts)
        startup_metrics.publish(ns, name, p.status.startup, p.startup_completed)
        for event in p.events:
            log.info("rlrun %s/%s %s: %s", ns, name, event.reason, event.message)
            self.kube.event(body, event.type, event.reason, event.message)
        action = "start writing"
        try:
            for api_version, kind, child in p.delete:
                action = f"delete {kind} {child}"
                self.kube.delete(api_version, kind, ns, child)
            for obj in p.create:
                action = f"create {obj['kind']} {obj['metadata']['name']}"
                self.kube.create(obj)
            for obj in p.apply:
                action = f"apply {obj['kind']} {obj['metadata']['name']}"
                self.kube.apply(obj)
            for job, labels in p.relabel:
                action = f"relabel Job {job}"
                self.kube.merge_patch("batch/v1", "Job", ns, job, {"metadata": {"labels": labels}})
            for job, suspend in p.suspend:
                action = f"patch Job {job} suspend={suspend}"
                self.kube.merge_patch("batch/v1", "Job", ns, job, {"spec": {"suspend": suspend}})
            for claim, patch in p.protect:
                action = f"add this run as an owner of PersistentVolumeClaim {claim}"
                strategic = "application/strategic-merge-patch+json"
                self.kube.merge_patch("v1", "PersistentVolumeClaim", ns, claim, patch, strategic)
        except Exception as exc:  # name the write that failed, for the RLRun's ReconcileError
            exc.add_note(f"{action} failed")
            raise
        if p.writes_children and (p.status.condition(ERROR_CONDITION) or {}).get("status") == "True":
            # kept through the status write (a child write could still fail); every write succeeded now
            clear_error(p.status, self.clock())
            self.kube.patch_run_status(ns, name, {"conditions": p.status.conditions})
        if p.delete_run:
            log.info("rlrun %s/%s: ttlSecondsAfterFinished passed, deleting it", ns, name)
            self.kube.delete(body["apiVersion"], body["kind"], ns, name)
