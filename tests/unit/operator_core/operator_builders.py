"""Builders for operator-core unit tests: a rendered example run, observed children with status.

Imported by name (conftest.py puts this folder on sys.path).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from rlrun.operator.api import RLRun
from rlrun.operator.reconcile import RunSettings
from rlrun.operator.render import render_children
from rlrun.operator.restarts import StallPolicy

EXAMPLE = Path(__file__).resolve().parents[3] / "manifests/examples/color-codeword.yaml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def body(**spec: Any) -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["metadata"].update(namespace="ns", uid="run-uid", generation=1)
    data["spec"].update(spec)
    return data


URL = "http://operator:8081"


def rendered(data: dict[str, Any]):
    """The renderer a pass gets: the operator's progress URL, and a token for a Secret still to create."""
    run = RLRun.model_validate(data)
    return lambda trainer=0, orchestrator=0: render_children(
        run,
        trainer_attempt=trainer,
        orchestrator_attempt=orchestrator,
        progress_url=URL,
        progress_token="test-token",
    )


def settings(data: dict[str, Any], stall: StallPolicy | None = None) -> RunSettings:
    return RunSettings(RLRun.model_validate(data), stall or StallPolicy())


def observed(desired: list[dict[str, Any]], ready: bool = True, attempts: dict[str, int] | None = None):
    """Children as the API server would return them after creation: uids, and ready status if `ready`."""
    out = []
    for obj in desired:
        obj = copy.deepcopy(obj)
        name, kind = obj["metadata"]["name"], obj["kind"]
        obj["metadata"]["uid"] = f"uid-{kind}-{name}"
        component = obj["metadata"]["labels"].get("app.kubernetes.io/component")
        if kind == "Job" and attempts and component in attempts:
            key = "rlrun.dev/trainer-attempt" if component == "trainer" else "rlrun.dev/orchestrator-attempt"
            obj["metadata"]["labels"][key] = str(attempts[component])
        if ready and kind in ("Deployment", "StatefulSet"):
            obj["status"] = {"readyReplicas": obj["spec"]["replicas"]}
        if ready and kind == "Job":
            n = obj["spec"].get("parallelism", 1)
            obj["status"] = {"active": n, "ready": n}
        out.append(obj)
    return out


def pod(job: dict[str, Any], name: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "ownerReferences": [
                {"kind": "Job", "uid": job["metadata"]["uid"], "name": job["metadata"]["name"]}
            ],
        },
        "status": {"phase": phase},
    }


def find(objs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    label = "app.kubernetes.io/component"
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["labels"][label] == component)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)
