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


def render_children(run: RLRun, *, trainer_attempt: int = 0) -> list[Manifest]:
    """Every child of `run`, in a fixed order: volume and config first, then each component's Service
    before its workload, the NetworkPolicy last. `trainer_attempt` labels the trainer Job and pods."""
    return [
        *render_storage(run),
        *render_config(run),
        *render_inference(run),
        *render_env_workers(run),
        *render_orchestrator(run),
        *render_trainer(run, attempt=trainer_attempt),
        *render_network(run),
    ]
