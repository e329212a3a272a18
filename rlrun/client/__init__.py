"""Submit, watch, wait for, cancel and read RLRuns from a platform (no torch needed).

    from rlrun.client import Client, LocalClient
    client = Client()                                   # the cluster of your kubeconfig / in-cluster SA
    run = client.submit("run.yaml", request_id="pipeline-1234")
    outcome = client.wait(run.metadata.name, timeout=3600)
    print(outcome.phase, client.result(run.metadata.name).final_weights)

`LocalClient(root)` offers the same calls over `rlrun local` on this machine. Errors are `ClientError`
subclasses; each carries the `ExitCode` the `rlrun` CLI exits with.

Names are imported on first use: `Client` needs the kubernetes package and `LocalClient` does not, and
`rlrun --help` reads the exit codes without loading pydantic models.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Client": "cluster",
    "LocalClient": "local",
    "RunClient": "base",
    "COMPONENTS": "base",
    "RunEvent": "events",
    "Outcome": "events",
    "TERMINAL_PHASES": "events",
    "RunResult": "results",
    **dict.fromkeys(
        (
            "ClientError",
            "CRDNotInstalled",
            "ExitCode",
            "Forbidden",
            "InvalidArgument",
            "NoPods",
            "RequestConflict",
            "RunDeleted",
            "RunNotFound",
            "SpecRejected",
            "Unavailable",
            "WaitTimeout",
        ),
        "errors",
    ),
}


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rlrun.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rlrun.client.{_EXPORTS[name]}"), name)


__all__ = sorted(_EXPORTS)
