"""High availability: which replica is the active one, read from kopf's own peering object.

kopf peering pauses kopf's handlers on every replica but the highest-priority live one, and pauses ALL of
them when two share a priority (every pod of a Deployment gets the same flag values, so `replicaCount: 2`
with a fixed priority never reconciled). Each replica therefore draws a distinct random priority, and the
same rule kopf applies gates everything kopf does not run: the Reconciler's periodic pass and the progress
endpoint. A standby replica writes nothing; when the active one dies its keep-alive expires after the
peering lifetime and the next-highest replica takes over.

The rule is a pure function of the peering object's status (`{identity: {priority, lifetime, lastseen}}`),
so it is table-tested; `PeeringGate` only polls the object (a `list` with a field selector: the operator's
RBAC grants list/watch/patch on peerings, nothing more).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from rlrun.operator.kube import Kube
from rlrun.operator.status import parse_time

log = logging.getLogger(__name__)

PRIORITY_RANGE = 2**31 - 1
"""Random priorities are drawn from [1, PRIORITY_RANGE): two replicas collide with negligible odds."""


def random_priority() -> int:
    return 1 + secrets.randbelow(PRIORITY_RANGE - 1)


def own_identity() -> str:
    """kopf's peer id for this process: the pod name (POD_ID) or host, plus pid and a nonce, so a restarted
    container never mistakes its predecessor's keep-alive for its own."""
    base = os.environ.get("POD_ID") or socket.gethostname()
    return f"{base}/{os.getpid()}/{secrets.token_hex(3)}"


def is_active(peers: dict[str, dict[str, Any]], identity: str, priority: int, now: datetime) -> bool:
    """True when `identity` is alive in the peering and every other live peer has a lower priority."""
    live: dict[str, int] = {}
    for peer, info in peers.items():
        seen = parse_time(info.get("lastseen"))
        lifetime = timedelta(seconds=int(info.get("lifetime") or 60))
        if seen is not None and seen.astimezone(UTC) + lifetime > now:
            live[peer] = int(info.get("priority") or 0)
    if identity not in live:
        return False
    return all(p < priority for peer, p in live.items() if peer != identity)


class PeeringGate:
    """Polls the peering object(s) and answers `active()` from the last poll; unknown means standby."""

    def __init__(
        self,
        kube: Kube,
        name: str,
        namespaces: list[str],
        identity: str,
        priority: int,
        poll_seconds: float,
    ) -> None:
        self.kube, self.name, self.namespaces = kube, name, namespaces
        self.identity, self.priority, self.poll_seconds = identity, priority, poll_seconds
        self._active = False

    def active(self) -> bool:
        return self._active

    def _decide(self) -> bool:
        now = datetime.now(UTC)
        for namespace in self.namespaces or [None]:
            peering = self.kube.peering(self.name, namespace)
            if peering is None or not is_active(
                peering.get("status") or {}, self.identity, self.priority, now
            ):
                return False
        return True

    async def watch_forever(self) -> None:
        while True:
            try:
                active = await asyncio.to_thread(self._decide)
            except Exception as e:  # cannot confirm we lead: act as a standby until we can
                log.warning("cannot read peering %s: %s; standing by", self.name, e)
                active = False
            if active != self._active:
                log.info(
                    "peering %s: this replica (priority %d) is now %s",
                    self.name,
                    self.priority,
                    "ACTIVE" if active else "on standby (no writes)",
                )
            self._active = active
            await asyncio.sleep(self.poll_seconds)
