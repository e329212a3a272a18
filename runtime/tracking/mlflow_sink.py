"""MLflow sink: one MLflow run per RLRun, through the tracking server's REST API (MlflowClient, no global
active run). Imported only when spec.tracking.mlflow is set; needs `mlflow-skinny` (the `tracking` extra).
MLflow's own usage telemetry is turned off in this process (it would call out to a third party)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rlrun.runtime.config import MlflowConfig
from rlrun.runtime.tracking import Entry

MAX_PARAMS_PER_BATCH = 100  # MLflow's limits per log_batch call
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_CHARS = 6000


class MlflowSink:
    name = "mlflow"

    def __init__(self, cfg: MlflowConfig) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        self.client = MlflowClient(tracking_uri=cfg.tracking_uri)
        self.run_id = ""

    def start(self, run_id: str | None, run_name: str, params: Mapping[str, Any]) -> str:
        if run_id:  # a restart: the same run goes on (it may have been marked FAILED by the last attempt)
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return run_id
        experiment = self.client.get_experiment_by_name(self.cfg.experiment)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(self.cfg.experiment)
        )
        self.run_id = self.client.create_run(
            experiment_id, run_name=run_name, tags={"rlrun.run": run_name}
        ).info.run_id
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in sorted(params.items())]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])
        return self.run_id

    def log(self, entries: Sequence[Entry]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{axis}/{key}", value, now, step)
            for axis, step, figures in entries
            for key, value in figures.items()
        ]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])

    def table(self, step: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """MLflow's table format ({"columns", "data"}, what mlflow.log_table writes) as a run artifact."""
        self.client.log_dict(
            self.run_id,
            {"columns": list(columns), "data": [list(r) for r in rows]},
            f"samples/step_{step:06d}.json",
        )

    def finish(self, succeeded: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if succeeded else "FAILED")
