"""Which inference replicas serve the current policy, and the bounded wait for one that does.

Every replica is probed on its own URL (`GET /v1/version`). The current policy is the newest complete
weights export on the run volume (`assets.latest_weights`): the trainer reloads every replica with it,
and a replica that failed that reload, or was restarted and still serves an older version, is *lagging*.
Rollouts go only to replicas in sync; a lagging one gets requests again once it serves the current
version (the trainer's next reload, or a restarted server loading the newest export itself).

The wait has two parts. While the weights a step needs are not exported yet, the trainer is still
training: that is not a sync problem and the operator's stall detection bounds it. Once they are
exported, `orchestrator.weightSyncTimeoutSeconds` bounds the wait for a replica serving them; past it the
step fails with `WeightsNotInSync`, naming every replica's version, and no batch is written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from rlrun.runtime.assets import latest_weights
from rlrun.runtime.config import ReplicaProgress

PROBE_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.1


class WeightsNotInSync(RuntimeError):
    """No inference replica served the exported weights a step needs within weightSyncTimeoutSeconds."""


def replica_name(url: str) -> str:
    """A replica's name for status: its pod (the first label of a StatefulSet pod's DNS name), else
    `host:port` (loopback replicas of `rlrun local`)."""
    parts = urlsplit(url)
    host = parts.hostname or url
    try:
        ip_address(host)
    except ValueError:
        return host.split(".")[0]
    return f"{host}:{parts.port}" if parts.port else host


@dataclass(frozen=True)
class Replica:
    url: str
    served_version: int | None
    error: str = ""

    @property
    def name(self) -> str:
        return replica_name(self.url)


@dataclass(frozen=True)
class SyncState:
    """One probe of every replica against the current policy (`weights_version`, 0 before any export)."""

    weights_version: int
    replicas: tuple[Replica, ...]

    def serving(self, minimum: int) -> list[Replica]:
        """Replicas that may take this step's rollouts: in sync and at least `minimum` (maxAsyncSteps)."""
        floor = max(minimum, self.weights_version)
        return [r for r in self.replicas if r.served_version is not None and r.served_version >= floor]

    def report(self) -> list[ReplicaProgress]:
        in_sync = {r.url for r in self.serving(0)}
        return [
            ReplicaProgress(
                name=r.name, served_version=r.served_version, in_sync=r.url in in_sync, error=r.error[:256]
            )
            for r in self.replicas
        ]

    def describe(self) -> str:
        return ", ".join(
            f"{r.name} serves version {r.served_version}"
            if r.served_version is not None
            else f"{r.name} gave no version ({r.error})"
            for r in self.replicas
        )


async def probe(client: httpx.AsyncClient, url: str) -> Replica:
    try:
        response = await client.get(f"{url}/v1/version", timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return Replica(url, None, type(exc).__name__)
    if response.status_code != 200:
        return Replica(url, None, f"HTTP {response.status_code}")
    try:
        return Replica(url, int(response.json()["version"]))
    except (ValueError, KeyError, TypeError):
        return Replica(url, None, f"unreadable /v1/version answer {response.text[:80]!r}")


async def sync_state(client: httpx.AsyncClient, urls: Sequence[str], run_dir: Path) -> SyncState:
    latest = latest_weights(run_dir)
    replicas = await asyncio.gather(*(probe(client, url) for url in urls))
    return SyncState(latest[1] if latest else 0, tuple(replicas))


async def wait_for_replicas(
    client: httpx.AsyncClient,
    urls: Sequence[str],
    run_dir: Path,
    minimum: int,
    timeout_seconds: float,
    on_change: Callable[[SyncState], Awaitable[None]],
    clock: Callable[[], float] = time.monotonic,
) -> tuple[SyncState, list[Replica]]:
    """(the last probe, the replicas to route to): every replica in sync with the current policy and
    serving at least `minimum`. `on_change` sees each probe whose replica versions differ from the last."""
    exported_since: float | None = None
    last: SyncState | None = None
    while True:
        state = await sync_state(client, urls, run_dir)
        if last is None or state != last:
            await on_change(state)
        last = state
        if serving := state.serving(minimum):
            return state, serving
        if state.weights_version < minimum:
            exported_since = None  # the trainer has not exported them yet: not a sync problem
        elif exported_since is None:
            exported_since = clock()
        elif clock() - exported_since > timeout_seconds:
            raise WeightsNotInSync(
                f"weights version {state.weights_version} (exported under {run_dir / 'weights'}) is served by "
                f"no inference replica after orchestrator.weightSyncTimeoutSeconds={timeout_seconds:g}s "
                f"(this step needs version >= {max(minimum, state.weights_version)}): {state.describe()}"
            )
        await asyncio.sleep(POLL_SECONDS)


async def settle_replicas(
    client: httpx.AsyncClient,
    urls: Sequence[str],
    run_dir: Path,
    version: int,
    timeout_seconds: float,
    on_change: Callable[[SyncState], Awaitable[None]],
    clock: Callable[[], float] = time.monotonic,
) -> SyncState:
    """The run's end: the last probe once every replica serves `version` (the final weights), or after
    `timeout_seconds`. The run's result does not depend on it: a replica that missed the final reload is
    reported out of sync, not failed; what it spares is a final status taken while a replica still loads."""
    deadline = clock() + timeout_seconds
    last: SyncState | None = None
    while True:
        state = await sync_state(client, urls, run_dir)
        if last is None or state != last:
            await on_change(state)
        last = state
        if len(state.serving(version)) == len(state.replicas) or clock() > deadline:
            return state
        await asyncio.sleep(POLL_SECONDS)
