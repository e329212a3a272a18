"""The only module that talks to the Kubernetes API: apply, create, list, patch, delete, events, and the
login kopf uses (the same client configuration, one identity).

Calls are plain REST through the official client's `ApiClient` (no discovery round trips), every one with
a request timeout, and they are synchronous: the async side calls them through `asyncio.to_thread`.
Children are written with server-side apply under one field manager, so re-applying is idempotent and
fields set by others (HPA replicas, Kueue's `suspend`) are never silently clobbered except where the
operator owns them.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from rlrun.operator.names import (
    API_VERSION,
    APP_NAME,
    FIELD_MANAGER,
    KIND,
    LABEL_INSTANCE,
    LABEL_NAME,
    PLURAL,
)

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "PersistentVolumeClaim"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)


def _plural(kind: str) -> str:
    lower = kind.lower()
    return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    plural = PLURAL if (api_version, kind) == (API_VERSION, KIND) else _plural(kind)
    return f"{prefix}/namespaces/{namespace}/{plural}"


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """A client for `kubeconfig`, else $KUBECONFIG/~/.kube/config, else the in-cluster service account."""
    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    except config.ConfigException:
        if kubeconfig:
            raise
        config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


class Kube:
    """Typed-enough wrappers over the few REST calls the operator makes."""

    def __init__(
        self, api: client.ApiClient, field_manager: str = FIELD_MANAGER, timeout: float = REQUEST_TIMEOUT
    ):
        self.api, self.field_manager, self.timeout = api, field_manager, timeout

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        resp = self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        data = resp[0].data if isinstance(resp, tuple) else resp.data
        return json.loads(data) if data else {}

    # ------------------------------------------------------------------------------------------ reads

    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"{collection_path(API_VERSION, KIND, namespace)}/{name}")
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list_children(
        self,
        namespace: str,
        run: str,
        owner_uid: str = "",
        expected: tuple[tuple[str, str, str], ...] = (),
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(children of every managed kind, pods) carrying the run's instance label, plus any `expected`
        (apiVersion, kind, name) the label missed that the run owns (ownerReference uid): a child whose
        labels were edited away is still found, so its state still drives decisions."""
        selector = [("labelSelector", f"{LABEL_NAME}={APP_NAME},{LABEL_INSTANCE}={run}")]
        objects: list[dict[str, Any]] = []
        for api_version, kind in CHILD_KINDS:
            items = self._call("GET", collection_path(api_version, kind, namespace), query=selector)["items"]
            for item in items:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
            objects.extend(items)
        found = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for api_version, kind, name in expected:
            if (kind, name) in found or not owner_uid:
                continue
            query = [("fieldSelector", f"metadata.name={name}")]
            for item in self._call("GET", collection_path(api_version, kind, namespace), query=query)[
                "items"
            ]:
                owners = item["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == owner_uid for ref in owners):
                    objects.append({**item, "apiVersion": api_version, "kind": kind})
        pods = self._call("GET", collection_path("v1", "Pod", namespace), query=selector)["items"]
        return objects, pods

    def may(self, verb: str, group: str, resource: str, namespace: str) -> bool:
        """Whether the operator's identity may `verb` `resource` in `namespace` (SelfSubjectAccessReview,
        which every authenticated identity may create)."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                }
            },
        }
        path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        return bool(self._call("POST", path, body=review).get("status", {}).get("allowed"))

    def peering(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        """kopf's KopfPeering `name` in `namespace` (ClusterKopfPeering when None), via list + field
        selector: the operator's RBAC grants list/watch/patch on peerings, not get."""
        path = (
            f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings"
            if namespace
            else "/apis/kopf.dev/v1/clusterkopfpeerings"
        )
        items = self._call("GET", path, query=[("fieldSelector", f"metadata.name={name}")])["items"]
        return items[0] if items else None

    def secret_value(self, namespace: str, name: str, key: str) -> bytes | None:
        try:
            secret = self._call("GET", f"{collection_path('v1', 'Secret', namespace)}/{name}")
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        value = (secret.get("data") or {}).get(key)
        return base64.b64decode(value) if value else None

    # ----------------------------------------------------------------------------------------- writes

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply `obj` as the operator's field manager (conflicts forced: the spec wins)."""
        meta = obj["metadata"]
        path = f"{collection_path(obj['apiVersion'], obj['kind'], meta['namespace'])}/{meta['name']}"
        query = [("fieldManager", self.field_manager), ("force", "true")]
        return self._call("PATCH", path, body=obj, query=query, content_type="application/apply-patch+yaml")

    def create(self, obj: dict[str, Any]) -> bool:
        """Create `obj`; False when it already exists (a concurrent or earlier pass made it)."""
        meta = obj["metadata"]
        try:
            self._call(
                "POST",
                collection_path(obj["apiVersion"], obj["kind"], meta["namespace"]),
                body=obj,
                query=[("fieldManager", self.field_manager)],
            )
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        content_type: str = "application/merge-patch+json",
    ) -> None:
        """A merge patch; `application/strategic-merge-patch+json` merges lists by key (ownerReferences
        by uid) where a merge patch would replace them."""
        path = f"{collection_path(api_version, kind, namespace)}/{name}"
        self._call("PATCH", path, body=patch, content_type=content_type)

    def find(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object by name through `list` (the verb the operator's RBAC grants on its children)."""
        query = [("fieldSelector", f"metadata.name={name}")]
        items = self._call("GET", collection_path(api_version, kind, namespace), query=query)["items"]
        return items[0] if items else None

    def patch_run_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> None:
        """Merge-patch the status subresource. With `resource_version` the write is conditional: the API
        server answers 409 Conflict when the RLRun changed since that version was read."""
        path = f"{collection_path(API_VERSION, KIND, namespace)}/{name}/status"
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        self._call("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete with background propagation (owned pods go via GC); False when already gone."""
        path = f"{collection_path(api_version, kind, namespace)}/{name}"
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self._call("DELETE", path, body=body)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the RLRun (what `kubectl describe rlr` shows)."""
        meta = owner["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.field_manager},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.field_manager,
        }
        self._call("POST", collection_path("v1", "Event", meta["namespace"]), body=body)


# ----------------------------------------------------------------------------------------- login


def bearer_token(cfg: client.Configuration) -> str | None:
    """The bare token of a client configuration, or None.

    kubernetes>=12 stores it as `api_key["BearerToken"] = "Bearer <tok>"` (kubeconfig) or "bearer <tok>"
    (in-cluster, refreshed from the projected token file by `refresh_api_key_hook`, which
    `get_api_key_with_prefix` runs); older clients used `api_key["authorization"]`. Missing it makes kopf
    log in as system:anonymous, so every form is read here."""
    value = cfg.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":  # a bare token with no scheme
        token = value.strip()
    return token.strip() or None


def connection_info(api: client.ApiClient) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration `Kube` uses (one kubeconfig, one identity)."""
    cfg = api.configuration
    token = bearer_token(cfg)
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        token=token,
        scheme="Bearer" if token else None,
    )
