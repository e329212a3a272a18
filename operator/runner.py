"""Drives reconcile passes: one at a time per run, coalesced, timed, and applied in a safe order.

Any number of triggers (kopf create/update/resume, the timer, child Job/Pod/Deployment events, a progress
report, a requeue) call `poke()`. A pass already running for that run just marks it dirty and runs once
more when it ends, so a burst of child events costs one or two passes, never one each. A pass is:
read the RLRun, list its children, `plan()`, then write in this order: deletes, creates, applies, Job
suspend patches, ONE status write, and only after that the Events (JobSet's order: an event never
announces a state that failed to persist).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from rlrun.operator.api import RLRun
from rlrun.operator.kube import Kube
from rlrun.operator.names import APP_NAME, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_NAME
from rlrun.operator.observe import observe
from rlrun.operator.progress import ProgressStore
from rlrun.operator.reconcile import PROGRESS_SECRET_SUFFIX, PROGRESS_TOKEN_KEY, Plan, RunSettings, plan
from rlrun.operator.reconcile_errors import describe_error, report_error
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

Key = tuple[str, str]


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
    ) -> None:
        self.kube, self.store, self.stall, self.progress_url, self.clock = (
            kube,
            store,
            stall,
            progress_url,
            clock,
        )
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
        state = self._runs.pop(key, None)
        self._tokens.pop((namespace, f"{name}{PROGRESS_SECRET_SUFFIX}"), None)  # a new run, a new Secret
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
        if state.running:
            return
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
        settings = RunSettings.from_body(body, self.stall)
        stored = RunStatus.from_dict(body.get("status"))
        try:
            objects, pods = await asyncio.to_thread(self.kube.list_children, namespace, name)
            children = observe(objects, pods)
            progress = self.store.view(key, stored.progress, stored.orchestrator.attempt)
            decided = plan(
                settings,
                lambda attempt: render_children(run, trainer_attempt=attempt),
                children,
                stored,
                progress,
                self.clock(),
                self.progress_url,
            )
            await asyncio.to_thread(self._write, body, decided)
        except Exception as exc:
            await asyncio.to_thread(self._write_error, body, stored, exc)
            raise
        return decided.requeue_after

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
        action = "start writing"
        try:
            for api_version, kind, child in p.delete:
                action = f"delete {kind} {child}"
                self.kube.delete(api_version, kind, ns, child)
            if p.ensure_progress_secret:
                action = f"create Secret {name}{PROGRESS_SECRET_SUFFIX}"
                labels = {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name, LABEL_COMPONENT: "orchestrator"}
                self.kube.create_progress_secret(
                    body, f"{name}{PROGRESS_SECRET_SUFFIX}", PROGRESS_TOKEN_KEY, labels
                )
            for obj in p.create:
                action = f"create {obj['kind']} {obj['metadata']['name']}"
                self.kube.create(obj)
            for obj in p.apply:
                action = f"apply {obj['kind']} {obj['metadata']['name']}"
                self.kube.apply(obj)
            for job, suspend in p.suspend:
                action = f"patch Job {job} suspend={suspend}"
                self.kube.merge_patch("batch/v1", "Job", ns, job, {"spec": {"suspend": suspend}})
            action = "write the status"
            self.kube.patch_run_status(ns, name, p.status.to_dict())
        except Exception as exc:  # name the write that failed, for the RLRun's ReconcileError
            exc.add_note(f"{action} failed")
            raise
        for event in p.events:
            log.info("rlrun %s/%s %s: %s", ns, name, event.reason, event.message)
            self.kube.event(body, event.type, event.reason, event.message)
        if p.delete_run:
            log.info("rlrun %s/%s: ttlSecondsAfterFinished passed, deleting it", ns, name)
            self.kube.delete(body["apiVersion"], body["kind"], ns, name)
