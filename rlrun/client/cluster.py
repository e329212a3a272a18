"""`Client`: RLRuns on a cluster through the Kubernetes API (kubeconfig, or the pod's ServiceAccount).

    from rlrun.client import Client
    client = Client(namespace="team-a")                  # kubeconfig / in-cluster, like kubectl
    run = client.submit("run.yaml", request_id="job-42")  # idempotent
    outcome = client.wait(run.metadata.name, timeout=3600)

What `cancel` does: it deletes the RLRun. Kubernetes' garbage collector then deletes every child the
operator made (pods, Jobs, Deployments, Services, ConfigMap, Secret, NetworkPolicy) and the `<run>-assets`
PersistentVolumeClaim rlrun created, so the volume's data (checkpoints, weights, samples kept on it) goes
as its PersistentVolume's reclaim policy says (Delete for dynamically provisioned volumes). A claim named in
`spec.storage.existingClaim` is not owned by the run and is never deleted. To stop paying for GPUs but keep
everything, suspend instead (`spec.suspend: true`); `result()` before `cancel` says where outputs are.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes import config
from kubernetes.client.exceptions import ApiException

from rlrun import pod_contract
from rlrun.client.base import COMPONENTS, RunClient, Selector, selector_string
from rlrun.client.errors import InvalidArgument, NoPods, RequestConflict, RunNotFound, Unavailable
from rlrun.client.events import RunEvent, changes, is_terminal
from rlrun.client.kubeapi import CONNECTION_ERRORS, KubeApi, default_namespace
from rlrun.client.request import Source, conflict_message, prepare, same_request
from rlrun.client.results import RunResult, cluster_result
from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.kube import collection_path, load_api_client
from rlrun.operator.render.log_reader import render_log_reader

REQUEST_TIMEOUT = 30.0
WATCH_SERVER_TIMEOUT = 60
"""Seconds the API server keeps one watch request open (then the client re-watches from where it was)."""
WATCH_READ_MARGIN = 15.0
"""A watch silent this long past its server timeout is a dead connection: drop it and re-watch."""
RECONNECT_TIMEOUT = 120.0
"""How long a watch keeps reconnecting to an unreachable API server before it raises Unavailable."""
SUBMIT_ATTEMPTS = 3
"""A create whose answer was lost is retried: idempotency makes that safe."""
CANCEL_POLL = 0.2
LOG_READER_TIMEOUT = 300.0
"""Seconds a log-reader pod may take (scheduling, pulling the runtime image, reading): its deadline too."""
POD_POLL = 0.5
ATTEMPT_LABELS = {
    names.COMPONENT_TRAINER: names.LABEL_TRAINER_ATTEMPT,
    names.COMPONENT_ORCHESTRATOR: names.LABEL_ORCHESTRATOR_ATTEMPT,
}
"""The components restarted as numbered attempts, and the pod label that carries the number."""


class _Gone(Exception):
    """The watch's resourceVersion is older than the server keeps (410): list again."""


class Client(RunClient):
    """RLRuns in one namespace of a cluster. Every request is bounded by `request_timeout`."""

    def __init__(
        self,
        namespace: str | None = None,
        *,
        kubeconfig: str | None = None,
        api_client: k8s.ApiClient | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        watch_timeout: int = WATCH_SERVER_TIMEOUT,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        log_reader_timeout: float = LOG_READER_TIMEOUT,
    ) -> None:
        try:
            api = api_client or load_api_client(kubeconfig)
        except (config.ConfigException, OSError) as e:
            raise Unavailable(
                f"no Kubernetes credentials: {e}; pass a kubeconfig (--kubeconfig, $KUBECONFIG, "
                "~/.kube/config) or run in a pod with a ServiceAccount"
            ) from e
        self.namespace = namespace or default_namespace(kubeconfig)
        self.kube = KubeApi(api, self.namespace, request_timeout)
        self.watch_timeout, self.reconnect_timeout = watch_timeout, reconnect_timeout
        self.log_reader_timeout = log_reader_timeout

    def close(self) -> None:
        self.kube.api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run_path(self, name: str) -> str:
        return f"{self.kube.runs_path}/{name}"

    # ---------------------------------------------------------------------------------------- submit

    def submit(self, source: Source, name: str | None = None, *, request_id: str | None = None) -> RLRun:
        sub = prepare(source, name=name, request_id=request_id, namespace=self.namespace)
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                created = self.kube.raw("POST", self.kube.runs_path, body=sub.body)
                return RLRun.model_validate(json.loads(created.data))
            except ApiException as e:
                if e.status != 409:
                    raise self.kube.error(e, name=sub.name, verb="create") from e
            except CONNECTION_ERRORS as e:
                # The answer was lost, not necessarily the create: try again, AlreadyExists will tell.
                if attempt == SUBMIT_ATTEMPTS:
                    raise self.kube.unreachable(e) from e
                time.sleep(0.5 * attempt)
                continue
            try:
                existing = self.get(sub.name)
            except RunNotFound:
                continue  # deleted between our create and our read: create again
            verdict = same_request(existing, sub)
            if verdict:
                return existing
            raise RequestConflict(conflict_message(existing, sub))
        raise Unavailable(f"rlrun {sub.name!r} kept being created and deleted by someone else")

    # ----------------------------------------------------------------------------------------- reads

    def get(self, name: str) -> RLRun:
        return RLRun.model_validate(self.kube.call("GET", self._run_path(name), name=name, verb="get"))

    def list(self, selector: Selector = None) -> builtins.list[RLRun]:
        query = [("labelSelector", s)] if (s := selector_string(selector)) else []
        items = self.kube.call("GET", self.kube.runs_path, query=query, verb="list")["items"]
        return sorted((RLRun.model_validate(i) for i in items), key=lambda r: r.metadata.name)

    def _list_one(self, name: str) -> tuple[RLRun | None, str]:
        """The run (None if absent) and the collection's resourceVersion to watch from."""
        query = [("fieldSelector", f"metadata.name={name}")]
        listed = self.kube.call("GET", self.kube.runs_path, query=query, verb="list")
        items = listed.get("items") or []
        run = RLRun.model_validate(items[0]) if items else None
        return run, str(listed["metadata"]["resourceVersion"])

    def result(self, name: str) -> RunResult:
        return cluster_result(self.get(name))

    # ----------------------------------------------------------------------------------------- watch

    def watch(
        self, name: str, *, timeout: float | None = None, resource_version: str | None = None
    ) -> Iterator[RunEvent]:
        """Events of run `name` (see RunClient.watch). Starts with the current state, unless
        `resource_version` is given: then it replays the changes after that version (a platform that
        stored its position). Survives dropped connections (re-watches from the last version seen) and
        `410 Gone` (lists again and reports what changed meanwhile)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: RLRun | None = None
        if resource_version is None:
            run, resource_version = self._list_one(name)
            if run is None:
                raise RunNotFound(name, self.namespace)
            last = run
            yield RunEvent("ADDED", run, changes(None, run.status) or ("phase",))
            if is_terminal(run.status.phase if run.status else None):
                return
        rv = resource_version
        failing_since: float | None = None
        while (remaining := _remaining(deadline)) > 0:
            server_timeout = max(1, int(min(self.watch_timeout, remaining)))
            query = [
                ("watch", "true"),
                ("fieldSelector", f"metadata.name={name}"),
                ("resourceVersion", rv),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", str(server_timeout)),
            ]
            try:
                for line in self.kube.stream(self.kube.runs_path, query, server_timeout + WATCH_READ_MARGIN):
                    failing_since = None
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _Gone
                        raise self.kube.error(
                            ApiException(status=obj.get("code"), reason=obj.get("reason")), name=name, verb="watch"
                        )  # fmt: skip
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if kind == "BOOKMARK":
                        continue
                    run = RLRun.model_validate(obj)
                    if kind == "DELETED":
                        yield RunEvent("DELETED", run, ("deleted",))
                        return
                    changed = changes(last.status if last else None, run.status)
                    last = run
                    if changed:
                        yield RunEvent("MODIFIED" if kind == "MODIFIED" else "ADDED", run, changed)
                    if is_terminal(run.status.phase if run.status else None):
                        return
                    if _remaining(deadline) <= 0:
                        return
            except (_Gone, ApiException) as e:
                if isinstance(e, ApiException) and e.status != 410:
                    raise self.kube.error(e, name=name, verb="watch") from e
                run, rv = self._list_one(name)
                if run is None:
                    if last is not None:
                        yield RunEvent("DELETED", last, ("deleted",))
                        return
                    raise RunNotFound(name, self.namespace) from None
                changed = changes(last.status if last else None, run.status)
                last = run
                if changed:
                    yield RunEvent("MODIFIED", run, changed)
                if is_terminal(run.status.phase if run.status else None):
                    return
            except CONNECTION_ERRORS as e:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self.reconnect_timeout:
                    raise self.kube.unreachable(e) from e
                time.sleep(min(1.0, max(0.0, _remaining(deadline))))

    # ---------------------------------------------------------------------------------------- cancel

    def cancel(self, name: str, *, timeout: float = 60.0) -> None:
        """Delete the RLRun (see the module docstring for what goes with it) and wait until it is gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        self.kube.call("DELETE", self._run_path(name), body=body, name=name, verb="delete")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get(name)
            except RunNotFound:
                return
            time.sleep(CANCEL_POLL)
        raise Unavailable(f"rlrun {name!r} is still there {timeout:g}s after its deletion (a finalizer?)")

    # ------------------------------------------------------------------------------------------ logs

    def logs(
        self,
        name: str,
        component: str,
        *,
        follow: bool = False,
        attempt: int | None = None,
        idle_timeout: float = 600.0,
    ) -> Iterator[str]:
        """Lines of the component's current pod (the orchestrator pod, trainer pod of rank 0 of the newest
        attempt, the newest inference / env-worker pod). `follow` streams until the container stops or
        `idle_timeout` seconds pass without a line. `attempt` (trainer, orchestrator): that attempt's pod
        while it exists; once an attempt's (or the ended run's) pods are gone, every pod's log of it from
        the run volume (`volume_logs`)."""
        if component not in COMPONENTS:
            raise InvalidArgument(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
        if attempt is not None and component not in ATTEMPT_LABELS:
            raise InvalidArgument(f"--attempt applies to {' and '.join(ATTEMPT_LABELS)}, not {component}")
        run = self.get(name)
        try:
            pod = self._pod_of(run, component, attempt)
        except NoPods:
            if attempt is None and not is_terminal(run.status.phase if run.status else None):
                raise  # a live run between pods: nothing ended whose logs the volume would hold
            # the attempt's (or the ended run's) pods are gone; their logs are on the run volume
            yield from self.volume_logs(run, component, attempt)
            return
        container = pod["spec"]["containers"][0]["name"]
        path = f"{collection_path('v1', 'Pod', self.namespace)}/{pod['metadata']['name']}/log"
        query = [("container", container)]
        if not follow:
            try:
                text = self.kube.raw("GET", path, query=query).data.decode(errors="replace")
            except ApiException as e:
                raise self.kube.error(e, name=name, verb="get") from e
            except CONNECTION_ERRORS as e:
                raise self.kube.unreachable(e) from e
            yield from text.splitlines()
            return
        try:
            yield from self.kube.stream(path, [*query, ("follow", "true")], idle_timeout)
        except ApiException as e:
            raise self.kube.error(e, name=name, verb="get") from e
        except CONNECTION_ERRORS:
            return  # idle for idle_timeout, or the container's stream ended

    def volume_logs(self, run: RLRun, component: str, attempt: int | None = None) -> Iterator[str]:
        """`component`'s logs of `attempt` (None: its newest attempt) from the run volume, every pod's file
        one after another: a log-reader pod (operator/render/log_reader.py) prints them, this reads its log
        and deletes it. Needs create/get/delete on pods and get on pods/log in the namespace."""
        pod_name = f"{run.metadata.name}-logs-{secrets.token_hex(3)}"
        manifest = render_log_reader(
            run, component, attempt, pod_name=pod_name, deadline_seconds=int(self.log_reader_timeout)
        )
        pods = collection_path("v1", "Pod", self.namespace)
        self.kube.call(
            "POST", pods, body=manifest, name=run.metadata.name, verb="create a log-reader pod for"
        )
        try:
            phase, why = self._await_pod(f"{pods}/{pod_name}", self.log_reader_timeout)
            try:
                text = self.kube.raw("GET", f"{pods}/{pod_name}/log").data.decode(errors="replace")
            except ApiException as e:  # about the reader pod, not the run: no RunNotFound for its 404
                raise Unavailable(
                    f"cannot read the log of the log-reader pod {pod_name} ({phase}: {why}): {e.status} "
                    f"{e.reason}; a pod's log needs `get` on pods/log in namespace {self.namespace}"
                ) from e
            except CONNECTION_ERRORS as e:
                raise self.kube.unreachable(e) from e
        finally:
            with contextlib.suppress(ApiException, *CONNECTION_ERRORS):
                self.kube.raw("DELETE", f"{pods}/{pod_name}", query=[("gracePeriodSeconds", "0")])
        lines = text.splitlines()
        if phase == "Succeeded" and lines[:1] and lines[0].startswith(pod_contract.LOG_ATTEMPT_MARK):
            yield from lines[1:]
            return
        missing = next((ln for ln in lines if ln.startswith(pod_contract.NO_LOGS_MARK)), None)
        if missing:
            raise NoPods(
                f"rlrun {run.metadata.name!r}: {missing.removeprefix(pod_contract.NO_LOGS_MARK).strip()}"
            )
        raise Unavailable(
            f"the log-reader pod {pod_name} of rlrun {run.metadata.name!r} ended {phase} ({why}): "
            + ("\n".join(lines[-5:]) or "no output")
        )

    def _await_pod(self, path: str, timeout: float) -> tuple[str, str]:
        """(phase, why) of the pod at `path` once it ended; Unavailable when it has not after `timeout`."""
        deadline = time.monotonic() + timeout
        why = "not scheduled"
        while time.monotonic() < deadline:
            pod = self.kube.call("GET", path, verb="get")
            status = pod.get("status") or {}
            phase = status.get("phase") or "Pending"
            waiting = [
                (cs.get("state") or {}).get("waiting") or {} for cs in status.get("containerStatuses") or []
            ]
            why = next(
                (f"{w.get('reason')}: {w.get('message', '')}" for w in waiting if w),
                status.get("reason") or phase,
            )
            if phase in ("Succeeded", "Failed"):
                return phase, why
            time.sleep(POD_POLL)
        raise Unavailable(
            f"the log-reader pod {path.rsplit('/', 1)[1]} did not finish within {timeout:g}s ({why})"
        )

    def _pod_of(self, run: RLRun, component: str, attempt: int | None = None) -> dict[str, Any]:
        selector = (
            f"{names.LABEL_NAME}={names.APP_NAME},{names.LABEL_INSTANCE}={run.metadata.name},"
            f"{names.LABEL_COMPONENT}={component}"
        )
        if attempt is not None:
            selector += f",{ATTEMPT_LABELS[component]}={attempt}"
        pods = self.kube.call(
            "GET", collection_path("v1", "Pod", self.namespace), query=[("labelSelector", selector)], verb="list"
        )["items"]  # fmt: skip
        if not pods and attempt is not None:
            raise NoPods(
                f"rlrun {run.metadata.name!r} has no {component} pod of attempt {attempt}: an ended attempt's "
                "pods are deleted with their logs (rlrun local keeps every attempt's logs on disk)"
            )
        if not pods:
            phase = run.status.phase if run.status else None
            raise NoPods(
                f"rlrun {run.metadata.name!r} (phase {phase}) has no {component} pod now: pods are created "
                "while the run is Pending/Running and released when it ends"
            )

        def rank(pod: dict[str, Any]) -> tuple[Any, ...]:
            meta = pod["metadata"]
            index = (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", "0")
            return (index == "0", pod["status"].get("phase") == "Running", meta["creationTimestamp"])

        return max(pods, key=rank)


def _remaining(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.monotonic()
