"""The test plays the runtime on the kwok tier (kwok runs no containers): it pushes progress reports to
the operator's endpoint with the run's token, as the orchestrator does, and ends the orchestrator pod."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
from operator_harness import get, pods, run_doc

from rlrun.runtime.config import Progress

MAX_STEPS = run_doc()["spec"]["orchestrator"]["maxSteps"]


def push_progress(
    kube: Any, namespace: str, name: str, port: int, step: int, reward: float, **kw: Any
) -> None:
    token = base64.b64decode(get(kube, namespace, "secret", f"{name}-progress")["data"]["token"]).decode()
    body = Progress(run_id=name, step=step, max_steps=MAX_STEPS, step_seconds=0.5, reward_mean=reward, **kw)
    resp = httpx.post(
        f"http://127.0.0.1:{port}/v1/namespaces/{namespace}/rlruns/{name}/progress",
        content=body.model_dump_json(by_alias=True),
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert resp.status_code == 202, resp.text


def running_orchestrator(kube: Any, namespace: str, name: str) -> str | None:
    live = [
        p for p in pods(kube, namespace, "orchestrator", run=name) if p["status"].get("phase") == "Running"
    ]
    return live[0]["metadata"]["name"] if live else None


def kubeconfig_for(kube: Any, path: Path, namespace: str, server: str | None = None, token: str | None = None,
                   user: str = "admin") -> Path:  # fmt: skip
    """A kubeconfig whose context names `namespace` (admin cert unless `token`), optionally via `server`."""
    from controlplane import write_kubeconfig

    write_kubeconfig(path, server or kube.server, kube.pki, user=user, token=token)
    text = path.read_text().replace("context: {cluster: test, user: ", f"context: {{namespace: {namespace}, "
                                                                        "cluster: test, user: ")  # fmt: skip
    path.write_text(text)
    return path


def status(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = get(kube, namespace, "rlrun", name)
    return (obj or {}).get("status") or {}
