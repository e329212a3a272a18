"""kopf registration only: every handler is a one-line trigger of `Reconciler.poke`.

Level-based control: create/update/resume and a timer on RLRuns, plus events of the children whose state
drives decisions (Jobs, Pods, Deployments), all end in the same idempotent pass.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client

from rlrun.operator.names import APP_NAME, GROUP, LABEL_INSTANCE, LABEL_NAME, PLURAL, VERSION
from rlrun.operator.runner import Reconciler

WATCHED_CHILDREN = (("batch", "v1", "jobs"), ("v1", "pods"), ("apps", "v1", "deployments"))


def connection_info(api: client.ApiClient) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration `Kube` uses (one kubeconfig, one identity)."""
    cfg = api.configuration
    token = (cfg.api_key or {}).get("authorization", "").removeprefix("Bearer ") or None
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        token=token,
        scheme="Bearer" if token else None,
    )


def register(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, api: client.ApiClient, interval: float
) -> None:
    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Status has a structural schema: keep kopf's bookkeeping in annotations, not status.kopf (pruned).
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        # Bounded API calls: a hung request must not wedge a watch or a handler.
        settings.networking.request_timeout = 30
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        # Events are written by the Reconciler after each status write; kopf's own are noise.
        settings.posting.level = 40

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(api)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    async def rlrun_changed(namespace: str, name: str, **_: Any) -> None:
        await reconciler.poke(namespace, name)

    @kopf.timer(GROUP, VERSION, PLURAL, interval=interval, registry=registry)
    async def rlrun_tick(namespace: str, name: str, **_: Any) -> None:
        await reconciler.poke(namespace, name)

    for resource in WATCHED_CHILDREN:

        @kopf.on.event(*resource, labels={LABEL_NAME: APP_NAME}, registry=registry)
        def child_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
            if run := labels.get(LABEL_INSTANCE):
                reconciler.poke_soon(namespace, run)
