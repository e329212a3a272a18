"""Which of the namespaces the operator was told to watch it may actually watch.

kopf treats a Forbidden list/watch in any one namespace as fatal for the whole operator: nothing is
reconciled anywhere while the process stays alive (and the liveness probe restarts it in a loop). So before
kopf starts, each namespace is checked with SelfSubjectAccessReviews for what kopf will list and watch
there; a namespace that fails is reported (an ERROR log naming the missing permission, and the gauge
`rlrun_namespace_forbidden{namespace}`) and left out, and the operator serves the others.
"""

from __future__ import annotations

import logging

from prometheus_client import Gauge

from rlrun.operator.kube import Kube
from rlrun.operator.names import GROUP, PLURAL

log = logging.getLogger(__name__)

WATCHED: tuple[tuple[str, str], ...] = (
    (GROUP, PLURAL),
    ("batch", "jobs"),
    ("", "pods"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
)
"""(API group, resource) that the operator lists and watches in every namespace (handlers.py)."""

FORBIDDEN = Gauge(
    "rlrun_namespace_forbidden",
    "1 for a namespace the operator was told to watch but may not list/watch (left out).",
    ["namespace"],
)


def missing_permissions(kube: Kube, namespace: str) -> list[str]:
    """`verb group/resource` pairs the operator lacks in `namespace` (empty: it may watch it)."""
    return [
        f"{verb} {group or 'core'}/{resource}"
        for group, resource in WATCHED
        for verb in ("list", "watch")
        if not kube.may(verb, group, resource, namespace)
    ]


def watchable(kube: Kube, namespaces: list[str]) -> list[str]:
    """The namespaces kopf may watch, in order; every other one is logged and flagged by the gauge."""
    keep = []
    for namespace in namespaces:
        missing = missing_permissions(kube, namespace)
        FORBIDDEN.labels(namespace).set(1 if missing else 0)
        if missing:
            log.error(
                "namespace %s is not watched: the operator may not %s there (grant them in its Role, "
                "then restart it); the other namespaces are served",
                namespace,
                ", ".join(missing),
            )
        else:
            keep.append(namespace)
    return keep
