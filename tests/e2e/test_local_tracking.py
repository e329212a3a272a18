"""Experiment tracking end to end: a short `rlrun local` run logs to a real MLflow tracking server
(SQLite, loopback) and to W&B in offline mode; a restart of every role (`--resume` with more steps: the
trainer from its checkpoint) continues the same tracked runs instead of starting new ones."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml
from mlflow_peer import mlflow_command, mlflow_server
from vllm_peer import free_port

from .conftest import SHORT_RUN, rlrun_local_file

pytestmark = pytest.mark.e2e
STEPS, MORE_STEPS = 4, 6


def _spec(tmp_path: Path, tracking_uri: str, steps: int) -> Path:
    doc = yaml.safe_load(SHORT_RUN.read_text())
    doc["metadata"]["name"] = "tracked"
    spec = doc["spec"]
    spec["orchestrator"].update(batchSize=32, maxSteps=steps)
    spec["trainer"].update(processesPerNode=1, microBatchSize=32, checkpointInterval=STEPS)
    spec["sampleUpload"] = {"everyNSteps": 2}
    spec["tracking"] = {
        "mlflow": {"trackingUri": tracking_uri, "experiment": "ci"},
        "wandb": {"project": "ci", "mode": "offline"},
    }
    path = tmp_path / "tracked.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def wandb_history(run_file: Path) -> list[dict[str, object]]:
    """The history rows of a W&B `.wandb` file: a LevelDB-style log (7-byte file header, 32 KiB blocks of
    records with a 7-byte header: crc32, length, type) of protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, pending, rows = run_file.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                )
    return rows


@pytest.mark.timeout(1500)
def test_mlflow_and_wandb_get_the_run_and_a_restart_continues_them(tmp_path, no_leftover_processes) -> None:
    mlflow_command()  # skips, saying how to build it, when the server's virtualenv is missing
    from mlflow.tracking import MlflowClient

    with mlflow_server(tmp_path / "mlflow", free_port()) as url:
        code, out = rlrun_local_file(_spec(tmp_path, url, STEPS), tmp_path, timeout=900)
        assert code == 0, out[-4000:]
        run_dir = tmp_path / "run_tracked"
        state = json.loads((run_dir / "tracking" / "state.json").read_text())
        client = MlflowClient(url)
        (run,) = client.search_runs([client.get_experiment_by_name("ci").experiment_id])
        assert run.info.run_id == state["run_ids"]["mlflow"] and run.info.run_name == "tracked"
        assert run.info.status == "FINISHED"
        assert run.data.params["orchestrator.batchSize"] == "32"
        assert run.data.params["envWorkers.environment.id"] == "color-codeword"

        def steps(key: str) -> list[int]:
            return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))

        assert steps("orchestrator/reward_mean") == list(range(STEPS))
        assert steps("trainer/loss") == steps("trainer/logprob_delta_mean") == list(range(STEPS))
        samples = sorted(a.path for a in client.list_artifacts(run.info.run_id, "samples"))
        assert samples == ["samples/step_000000.json", "samples/step_000002.json"]
        table = json.loads(
            Path(client.download_artifacts(run.info.run_id, samples[0], str(tmp_path))).read_text()
        )
        assert table["columns"][:3] == ["step", "example_id", "env"] and len(table["data"]) == 32

        (first,) = (run_dir / "tracking" / "wandb").glob(
            f"offline-run-*/run-{state['run_ids']['wandb']}.wandb"
        )
        history = wandb_history(first)
        logged = sorted(r["orchestrator/step"] for r in history if "orchestrator/reward_mean" in r)
        assert logged == list(range(STEPS))
        assert sorted(r["trainer/step"] for r in history if "trainer/loss" in r) == list(range(STEPS))
        tables = [r for r in history if r.get("samples/_type") == "table-file"]
        assert [(r["orchestrator/step"], r["samples/nrows"]) for r in tables] == [(0, 32), (2, 32)]
        assert all((first.parent / "files" / r["samples/path"]).is_file() for r in tables)

        # A restart of every role: the trainer resumes from its step-4 checkpoint, the orchestrator from
        # its saved position, and both trackers continue the same runs.
        code, out = rlrun_local_file(_spec(tmp_path, url, MORE_STEPS), tmp_path, "--resume", timeout=900)
        assert code == 0, out[-4000:]
        assert json.loads((run_dir / "tracking" / "state.json").read_text())["run_ids"] == state["run_ids"]
        (again,) = client.search_runs([run.info.experiment_id])
        assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
        assert steps("orchestrator/reward_mean") == list(range(MORE_STEPS))
        assert steps("trainer/loss") == list(range(MORE_STEPS))
        runs = sorted(
            (run_dir / "tracking" / "wandb").glob(f"offline-run-*/run-{state['run_ids']['wandb']}.wandb")
        )
        assert len(runs) == 2  # W&B offline keeps one directory per process; `wandb sync` joins them by id
        resumed = [r["orchestrator/step"] for r in wandb_history(runs[1]) if "orchestrator/reward_mean" in r]
        assert resumed == list(range(STEPS, MORE_STEPS))
