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
import json
import time
from collections.abc import Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes import config
from kubernetes.client.exceptions import ApiException

from rlrun.client.base import COMPONENTS, RunClient, Selector, selector_string
from rlrun.client.errors import InvalidArgument, NoPods, RequestConflict, RunNotFound, Unavailable
from rlrun.client.events import RunEvent, changes, is_terminal
from rlrun.client.kubeapi import CONNECTION_ERRORS, KubeApi, default_namespace
from rlrun.client.request import Source, conflict_message, prepare, same_request
from rlrun.client.results import RunResult, cluster_result
from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.kube import collection_path, load_api_client

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
        self, name: str, component: str, *, follow: bool = False, idle_timeout: float = 600.0
    ) -> Iterator[str]:
        """Lines of the component's current pod (the orchestrator pod, trainer pod of rank 0 of the newest
        attempt, the newest inference / env-worker pod). `follow` streams until the container stops or
        `idle_timeout` seconds pass without a line."""
        if component not in COMPONENTS:
            raise InvalidArgument(f"unknown component {component!r}: choose one of {', '.join(COMPONENTS)}")
        run = self.get(name)
        pod = self._pod_of(run, component)
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

    def _pod_of(self, run: RLRun, component: str) -> dict[str, Any]:
        selector = (
            f"{names.LABEL_NAME}={names.APP_NAME},{names.LABEL_INSTANCE}={run.metadata.name},"
            f"{names.LABEL_COMPONENT}={component}"
        )
        pods = self.kube.call(
            "GET", collection_path("v1", "Pod", self.namespace), query=[("labelSelector", selector)], verb="list"
        )["items"]  # fmt: skip
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
