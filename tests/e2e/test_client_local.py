"""The local backend: the colour-codeword example through the same client calls a platform makes on a
cluster (submit, watch, wait, result, logs, cancel), every role a real process under `rlrun local`."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from rlrun.cli import main
from rlrun.client import ExitCode, LocalClient, RequestConflict, RunNotFound
from rlrun.client.local import RECORDS

from .conftest import SHORT_RUN

pytestmark = pytest.mark.e2e
STEPS = 3


def short_doc(steps: int) -> dict:
    doc = yaml.safe_load(SHORT_RUN.read_text())
    doc["spec"]["orchestrator"]["maxSteps"] = steps
    return doc


def test_local_backend_runs_the_example_through_the_client_calls(
    tmp_path: Path, no_leftover_processes, capsys
):
    doc = short_doc(STEPS)
    # ten concurrent submits of one request (each its own client, as separate workers would) start one run
    with ThreadPoolExecutor(10) as pool:
        runs = list(pool.map(lambda _: LocalClient(tmp_path).submit(doc, request_id="local-1"), range(10)))
    name = runs[0].metadata.name
    assert {r.metadata.name for r in runs} == {name} and name.startswith("color-codeword-ci-")
    assert [p.name for p in (tmp_path / RECORDS).iterdir()] == [name]
    client = LocalClient(tmp_path)
    with pytest.raises(RequestConflict, match="different spec"):
        client.submit(short_doc(STEPS + 1), request_id="local-1")

    events = list(client.watch(name, timeout=600))
    assert events[0].phase == "Pending" and events[-1].phase == "Succeeded", [e.describe() for e in events]
    steps = [e.progress.step for e in events if "progress" in e.changed]
    assert steps == sorted(steps) and steps[-1] == STEPS
    outcome = client.wait(name, timeout=10)
    assert outcome.succeeded and outcome.progress.step == outcome.progress.max_steps == STEPS
    result = client.result(name)
    run_dir = tmp_path / f"run_{name}"
    assert result.run_dir == str(run_dir) and result.volume_claim is None
    assert result.final_weights == str(run_dir / "weights" / f"step_{STEPS}")
    assert (Path(result.final_weights) / "DONE").is_file()
    assert sorted(p.name for p in Path(result.samples).iterdir())[:1] == ["step_0.parquet"]
    assert any(f"step {STEPS - 1} reward" in line for line in client.logs(name, "orchestrator"))
    assert main(["wait", name, "--local", str(tmp_path), "--timeout", "5"]) == ExitCode.SUCCEEDED
    assert main(["list", "--local", str(tmp_path)]) == 0
    assert f"{name}  Succeeded  {STEPS}/{STEPS}" in capsys.readouterr().out

    # cancel: stops every process of a started run (the fixture checks none is left), forgets the run,
    # keeps its outputs on disk
    second = client.submit(short_doc(100), request_id="local-2").metadata.name
    trainer_log = tmp_path / f"run_{second}" / "logs" / "attempt-0" / "trainer.log"
    for event in client.watch(second, timeout=300):
        if trainer_log.exists() or event.terminal:
            break
    assert trainer_log.exists(), "the run's roles started"
    client.cancel(second)
    with pytest.raises(RunNotFound):
        client.get(second)
    assert (tmp_path / f"run_{second}" / "config.json").is_file()
    assert main(["get", second, "--local", str(tmp_path)]) == ExitCode.NOT_FOUND
