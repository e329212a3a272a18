"""REST plumbing of the cluster client: one bounded call, a watch stream, and the translation of API
errors into the client's actionable errors (which Kubernetes answer means "CRD missing", "RBAC",
"rejected at admission", "not found")."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from rlrun.client.errors import (
    ClientError,
    CRDNotInstalled,
    Forbidden,
    RequestConflict,
    RunNotFound,
    SpecRejected,
    Unavailable,
)
from rlrun.operator import names
from rlrun.operator.kube import collection_path

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
RBAC_DENIAL = re.compile(r" cannot [a-z]+ resource ")
THROTTLE_RETRIES = 5
THROTTLE_MAX_DELAY = 5.0
CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, OSError)
"""Raised by the transport when the server is unreachable, the connection drops or a read times out."""


def default_namespace(kubeconfig: str | None) -> str:
    """The kubeconfig context's namespace, else the pod's own (in-cluster), else `default`."""
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if ns := (active.get("context") or {}).get("namespace"):
            return str(ns)
        return "default"
    except (config.ConfigException, OSError, TypeError):
        if IN_CLUSTER_NAMESPACE.is_file():
            return IN_CLUSTER_NAMESPACE.read_text().strip()
        return "default"


def status_body(e: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(e.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


class KubeApi:
    """`call` and `stream` over one `ApiClient`, with errors as ClientError."""

    def __init__(self, api: client.ApiClient, namespace: str, request_timeout: float) -> None:
        self.api, self.namespace, self.request_timeout = api, namespace, request_timeout

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    @property
    def runs_path(self) -> str:
        return collection_path(names.API_VERSION, names.KIND, self.namespace)

    def raw(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = None,
    ) -> urllib3.HTTPResponse:
        """One request; ApiException and transport errors are left to the caller. `429 Too Many
        Requests` (API priority and fairness, a watch cache still initializing) is retried as the server
        asks, at most THROTTLE_RETRIES times."""
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                return self._raw(method, path, body, query, content_type, timeout)
            except ApiException as e:
                if e.status != 429 or attempt == THROTTLE_RETRIES:
                    raise
                delay = (status_body(e).get("details") or {}).get("retryAfterSeconds") or 1
                time.sleep(min(float(delay), THROTTLE_MAX_DELAY))
        raise AssertionError("unreachable")

    def _raw(
        self,
        method: str,
        path: str,
        body: Any,
        query: list[tuple[str, str]] | None,
        content_type: str,
        timeout: float | tuple[float, float] | None,
    ) -> urllib3.HTTPResponse:
        resp = self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout or self.request_timeout,
        )
        return resp[0] if isinstance(resp, tuple) else resp

    def call(
        self, method: str, path: str, *, name: str | None = None, verb: str, **kw: Any
    ) -> dict[str, Any]:
        """A request whose JSON answer is returned; failures become the matching ClientError."""
        try:
            data = self.raw(method, path, **kw).data
        except ApiException as e:
            raise self.error(e, name=name, verb=verb) from e
        except CONNECTION_ERRORS as e:
            raise self.unreachable(e) from e
        return json.loads(data) if data else {}

    def stream(self, path: str, query: list[tuple[str, str]], read_timeout: float) -> Iterator[str]:
        """Lines of a streaming GET (watch, follow logs); the connection is closed when the caller stops."""
        resp = self.raw("GET", path, query=query, timeout=(self.request_timeout, read_timeout))
        try:
            yield from iter_resp_lines(resp)
        finally:
            with suppress(Exception):
                resp.close()
                resp.release_conn()

    def unreachable(self, e: BaseException) -> Unavailable:
        return Unavailable(f"cannot reach the Kubernetes API server at {self.server}: {e}")

    def crd_installed(self) -> bool:
        """Does the server serve rlrun.dev/v1alpha1 rlruns (discovery)?"""
        try:
            found = json.loads(self.raw("GET", f"/apis/{names.API_VERSION}").data or b"{}")
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return any(r.get("name") == names.PLURAL for r in found.get("resources") or [])

    def error(self, e: ApiException, *, name: str | None, verb: str) -> ClientError:
        """The actionable error for an API answer `e` to `verb` on rlrun `name` (None: the collection)."""
        body = status_body(e)
        message = str(body.get("message") or e.reason or e)
        details = body.get("details") or {}
        causes = [
            (str(c.get("field") or ""), str(c.get("message") or "")) for c in details.get("causes") or []
        ]
        if e.status == 404:
            if details.get("kind") == names.PLURAL or (name and details.get("name") == name):
                return RunNotFound(name or str(details.get("name")), self.namespace)
            if not self._crd_installed_quietly():
                return CRDNotInstalled(self.server)
            return RunNotFound(name or "?", self.namespace)
        if e.status == 401:
            return Forbidden(
                f"the API server at {self.server} refused the credentials ({message}): "
                "check the kubeconfig's user or the ServiceAccount token"
            )
        if e.status == 403 and RBAC_DENIAL.search(message):
            return Forbidden(
                f"{message}\n  -> ask a cluster admin for a Role granting verb {verb!r} on resource "
                f"'rlruns' (apiGroup {names.GROUP}) in namespace {self.namespace!r}, bound to this user "
                "or ServiceAccount"
            )
        if e.status in (400, 403, 422):
            what = f"rlrun {name!r}" if name else "the request"
            return SpecRejected(f"the API server rejected {what}: {message}", causes)
        if e.status == 409:
            return RequestConflict(message)
        return Unavailable(f"the API server at {self.server} answered {e.status}: {message}")

    def _crd_installed_quietly(self) -> bool:
        try:
            return self.crd_installed()
        except (ApiException, *CONNECTION_ERRORS):
            return True  # cannot tell: do not claim the CRD is missing
