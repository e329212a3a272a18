"""kopf registration only: every handler is a one-line trigger of `Reconciler.poke`.

Level-based control: RLRun events, events of the children whose state drives decisions (Jobs, Pods,
Deployments) and the Reconciler's own periodic tick all end in the same idempotent pass. kopf's
create/update handlers and timers are not used: they store state on the object and need a finalizer.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client

from rlrun.operator.kube import connection_info
from rlrun.operator.names import APP_NAME, GROUP, LABEL_INSTANCE, LABEL_NAME, PLURAL, VERSION
from rlrun.operator.reconciler import Reconciler

WATCHED_CHILDREN = (
    ("batch", "v1", "jobs"),
    ("v1", "pods"),
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
)


def register(
    registry: kopf.OperatorRegistry, reconciler: Reconciler, api: client.ApiClient, peering_lifetime: int = 60
) -> None:
    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.peering.lifetime = peering_lifetime
        # Bounded API calls: a hung request must not wedge a watch or a handler.
        settings.networking.request_timeout = 30
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        # Events are written by the Reconciler after each status write; kopf's own are noise.
        settings.posting.level = 40
        # The operator is told its namespaces and the CRD is installed beforehand (chart/manifests): no
        # need to watch Namespaces and CRDs, which least-privilege RBAC forbids (kopf would retry the
        # Forbidden scans for a minute before serving anything).
        settings.scanning.disabled = True

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(api)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def rlrun_event(type: str | None, namespace: str, name: str, **_: Any) -> None:
        # Every event (the initial listing included, so this is also "resume"), never a finalizer:
        # kopf timers would put one on each RLRun and block its deletion whenever the operator is down.
        if type == "DELETED":
            reconciler.forget(namespace, name)
        else:
            await reconciler.poke(namespace, name)

    for resource in WATCHED_CHILDREN:

        @kopf.on.event(*resource, labels={LABEL_NAME: APP_NAME}, registry=registry)
        async def child_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
            if run := labels.get(LABEL_INSTANCE):
                reconciler.poke_soon(namespace, run)
