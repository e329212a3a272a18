"""Progress intake: the orchestrator PUSHES `Progress` reports to the operator over HTTP.

Push, not poll, because the operator often runs outside the cluster (development, tests) where pod IPs
are unreachable, while pods can always reach the operator's Service. Each run has a bearer token in the
Secret `<run>-progress` (made by the operator, injected into the orchestrator as RLRUN_PROGRESS_TOKEN).

    POST /v1/namespaces/<ns>/rlruns/<name>/progress   Authorization: Bearer <token>   body: Progress JSON
    -> 202 accepted | 409 older than what the operator holds | 400 bad body | 401 bad token

Reports older than the newest one held (`(attempt, step, updatedAt)` order), or from an attempt older than
the run's current orchestrator attempt, are refused so a straggler never rewinds `status.progress`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from rlrun.operator.names import PROGRESS_PATH, SUFFIX_PROGRESS
from rlrun.operator.status import progress_order
from rlrun.runtime.config import Progress

STATUS_FIELDS = (
    "step",
    "maxSteps",
    "rewardMean",
    "samplesPerSecond",
    "policyLag",
    "updatedAt",
    "attempt",
    "stepSeconds",
    "trainerStartup",
    "weightsVersion",
    "inferenceReplicas",
)

Key = tuple[str, str]


def to_status(progress: Progress) -> dict[str, Any]:
    """The subset of a report that `status.progress` holds (camelCase, times in RFC 3339)."""
    data = progress.model_dump(by_alias=True, mode="json")
    data["updatedAt"] = progress.updated_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {k: data.get(k) for k in STATUS_FIELDS}


@dataclass
class _RunProgress:
    report: dict[str, Any] | None = None
    min_attempt: int = 0


class ProgressStore:
    """The newest report pushed to this replica, per run, until a pass folds it into status.

    Only an inbox: when the step advanced and how long steps take are kept in the RLRun's status (the pass
    records them), so a replica that never receives a push still decides stalls from the same facts."""

    def __init__(self) -> None:
        self._runs: dict[Key, _RunProgress] = {}

    def offer(self, key: Key, progress: Progress) -> str | None:
        """Keep `progress` if it is newer; returns None when kept, else why it was refused."""
        entry = self._runs.setdefault(key, _RunProgress())
        report = to_status(progress)
        if progress.attempt < entry.min_attempt:
            return f"attempt {progress.attempt} is older than the orchestrator's attempt {entry.min_attempt}"
        if entry.report is not None and progress_order(report) <= progress_order(entry.report):
            return (
                f"(attempt, step) = ({progress.attempt}, {progress.step}) is not newer than the report held"
            )
        entry.report = report
        return None

    def newest(self, key: Key, stored: dict[str, Any] | None, current_attempt: int) -> dict[str, Any] | None:
        """The report a pass folds in: the held one when newer than `stored` (status), else None."""
        entry = self._runs.setdefault(key, _RunProgress())
        entry.min_attempt = current_attempt
        if stored and (entry.report is None or progress_order(stored) >= progress_order(entry.report)):
            entry.report = dict(stored)  # status is ahead (another replica, or a restart): refuse older
            return None
        return entry.report

    def forget(self, key: Key) -> None:
        self._runs.pop(key, None)


TokenLookup = Callable[[str, str, bool], Awaitable[bytes | None]]  # (namespace, secret, re-read)
Poke = Callable[[str, str], None]


def progress_app(
    store: ProgressStore, token_of: TokenLookup, poke: Poke, active: Callable[[], bool] = lambda: True
) -> web.Application:
    """The aiohttp app serving the progress endpoint (and /healthz for probes).

    A standby replica (`active()` False) refuses pushes with 503 and closes the connection, so the
    orchestrator's next push opens a new one, which the Service may route to the active replica. (Not a
    readiness gate: a never-Ready standby would block every rollout and `helm --wait`.)"""

    async def post(request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        if not active():
            return web.json_response(
                {"error": "standby operator replica: push again"},
                status=503,
                headers={"Connection": "close"},
            )
        auth = request.headers.get("Authorization", "")
        given = auth.removeprefix("Bearer ").encode()
        secret = f"{name}{SUFFIX_PROGRESS}"

        def valid(token: bytes | None) -> bool:
            return token is not None and auth.startswith("Bearer ") and hmac.compare_digest(given, token)

        # A run deleted and created again under the same name has a new Secret: a token that does not
        # match the cached one is checked once more against the Secret as it is now.
        if not valid(await token_of(ns, secret, False)) and not valid(await token_of(ns, secret, True)):
            return web.json_response(
                {"error": f"bad or missing bearer token for rlrun {ns}/{name}"}, status=401
            )
        try:
            progress = Progress.model_validate_json(await request.read())
        except ValidationError as e:
            return web.json_response({"error": f"body is not a Progress report: {e}"}, status=400)
        if progress.run_id != name:
            msg = f"report runId {progress.run_id!r} does not match rlrun {name!r}"
            return web.json_response({"error": msg}, status=400)
        refused = store.offer((ns, name), progress)
        if refused:
            return web.json_response({"accepted": False, "reason": refused}, status=409)
        poke(ns, name)
        return web.json_response({"accepted": True}, status=202)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    # A report is small, but may list up to 256 inference replicas (name and error up to ~0.5 KiB each).
    app = web.Application(client_max_size=256 * 1024)
    app.router.add_post(PROGRESS_PATH, post)
    app.router.add_get("/healthz", healthz)
    return app


__all__ = ["ProgressStore", "progress_app", "to_status"]
