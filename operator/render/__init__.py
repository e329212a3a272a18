"""Pure renderers: RLRun -> every child manifest, one module per component.

`render_children` is what the operator applies (server-side apply, field manager
`rlrun.operator.names.FIELD_MANAGER`) and what `rlrun render` prints. Pure: no I/O, no clock.
"""

from __future__ import annotations

from rlrun.operator.api import RLRun
from rlrun.operator.render.common import Manifest
from rlrun.operator.render.config import render_config
from rlrun.operator.render.env_workers import render_env_workers
from rlrun.operator.render.inference import render_inference
from rlrun.operator.render.network import render_network
from rlrun.operator.render.orchestrator import render_orchestrator
from rlrun.operator.render.storage import render_storage
from rlrun.operator.render.trainer import render_trainer

__all__ = ["Manifest", "render_children"]


def render_children(
    run: RLRun,
    *,
    trainer_attempt: int = 0,
    orchestrator_attempt: int = 0,
    progress_url: str | None = None,
    progress_token: str | None = None,
) -> list[Manifest]:
    """Every child of `run`, exactly as the operator writes it, in a fixed order: volume and config first,
    then each component's Service before its workload, the NetworkPolicy last.

    The inputs beyond the spec are what only the operator knows: the restart attempts recorded in status
    (they label the Jobs and pods and set RLRUN_ATTEMPT), the base URL pods reach the progress endpoint
    at, and the token of a progress Secret still to be created (None: the Secret is left out)."""
    return [
        *render_storage(run),
        *render_config(run),
        *render_inference(run),
        *render_env_workers(run),
        *render_orchestrator(
            run, attempt=orchestrator_attempt, progress_url=progress_url, progress_token=progress_token
        ),
        *render_trainer(run, attempt=trainer_attempt),
        *render_network(run),
    ]
