"""Weights & Biases sink: one W&B run per RLRun, resumed by id after a restart. Imported only when
spec.tracking.wandb is set; needs `wandb` (the `tracking` extra). Online it needs only WANDB_API_KEY;
offline it writes the run under `<run dir>/tracking/wandb/` (`wandb sync` uploads it later). System stats,
machine info, git and code capture and W&B's error reporting are off: they would read or send more than
the run's figures."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlrun.runtime.config import WandbConfig
from rlrun.runtime.tracking import Entry


class WandbSink:
    name = "wandb"

    def __init__(self, cfg: WandbConfig, directory: Path) -> None:
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        import wandb

        self.wandb = wandb
        self.cfg, self.dir = cfg, directory
        self.run: Any = None

    def start(self, run_id: str | None, run_name: str, params: Mapping[str, Any]) -> str:
        run_id = run_id or secrets.token_hex(8)  # W&B ids: [a-z0-9], chosen here so it can be kept first
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = self.wandb.Settings(
            console="off", silent=True, save_code=False, disable_git=True, x_disable_stats=True,
            x_disable_machine_info=True, x_disable_meta=True,
        )  # fmt: skip
        self.run = self.wandb.init(
            project=self.cfg.project, entity=self.cfg.entity, name=run_name, id=run_id, resume="allow",
            mode=self.cfg.mode, dir=str(self.dir), config=dict(params), settings=settings,
            reinit="create_new",
        )  # fmt: skip
        # Orchestrator and trainer steps advance separately: each axis plots against its own step.
        for axis in ("orchestrator", "trainer"):
            self.run.define_metric(f"{axis}/step")
            self.run.define_metric(f"{axis}/*", step_metric=f"{axis}/step")
        return run_id

    def log(self, entries: Sequence[Entry]) -> None:
        for axis, step, figures in entries:
            self.run.log({f"{axis}/step": step, **{f"{axis}/{k}": v for k, v in figures.items()}})

    def table(self, step: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = self.wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        self.run.log({"orchestrator/step": step, "samples": table})

    def finish(self, succeeded: bool) -> None:
        self.run.finish(exit_code=0 if succeeded else 1)
