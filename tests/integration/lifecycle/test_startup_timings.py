"""Start-up timings on the control-plane tier: the scheduling and container-start figures come from the
pods kwok runs, the runtime's (rendezvous, model loaded, first step) from a progress report relaying the
trainer's `trainer/startup.json`, written by the runtime's own writer and read back by its reader. The
same figures are read from the operator's real metrics endpoint."""

import base64
import socket
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from operator_harness import create_run, events, get, run_doc, run_status, running_operator
from prometheus_client.parser import text_string_to_metric_families

from rlrun.operator.status import parse_time
from rlrun.runtime.config import Progress, TrainerStartup, read_trainer_startup, write_trainer_startup

pytestmark = pytest.mark.cluster
PHASES = {
    "scheduled": "scheduledSeconds",
    "containers_started": "containersStartedSeconds",
    "rendezvous": "rendezvousSeconds",
    "model_loaded": "modelLoadedSeconds",
    "first_step": "firstStepSeconds",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample the operator's /metrics serves, by (name, labels)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _latest(samples, namespace: str) -> dict[str, float]:
    """rlrun_trainer_startup_seconds of run demo, by phase."""
    want = {("namespace", namespace), ("run", "demo")}
    return {
        dict(labels)["phase"]: value
        for (name, labels), value in samples.items()
        if name == "rlrun_trainer_startup_seconds" and want <= labels
    }


def _observed(samples, phase: str) -> float:
    return samples.get(("rlrun_trainer_startup_phase_seconds_count", frozenset({("phase", phase)})), 0.0)


def test_each_start_up_phase_of_a_trainer_attempt_lands_in_status_and_one_event(
    crd, namespace, wait_for, tmp_path
):
    kube = crd
    port = _free_port()
    with running_operator(kube, namespace, metrics_port=port) as op:
        before = {phase: _observed(_scrape(port), phase) for phase in PHASES}
        create_run(kube, namespace, run_doc())
        wait_for(lambda: run_status(kube, namespace).get("phase") == "Running", 60, "Running")
        st = wait_for(lambda: (run_status(kube, namespace).get("startup") or [{}])[0].get(
            "containersStartedSeconds") is not None and run_status(kube, namespace), 30, "pod phases")  # fmt: skip
        entry = st["startup"][0]
        assert entry["attempt"] == 0 and 0 <= entry["scheduledSeconds"] <= entry["containersStartedSeconds"]
        assert "rendezvousSeconds" not in entry and "StartupTimings" not in events(kube, namespace)
        latest = wait_for(lambda: len(_latest(_scrape(port), namespace)) == 2 and _latest(_scrape(port), namespace),
                          10, "the pod phases as metrics")  # fmt: skip
        assert latest == {
            "scheduled": entry["scheduledSeconds"],
            "containers_started": entry["containersStartedSeconds"],
        }

        created = parse_time(get(kube, namespace, "job", "demo-trainer")["metadata"]["creationTimestamp"])
        (tmp_path / "trainer").mkdir()
        at = {"rendezvous_at": 20, "model_loaded_at": 35, "first_step_at": 50}
        write_trainer_startup(
            tmp_path, TrainerStartup(attempt=0, **{k: created + timedelta(seconds=s) for k, s in at.items()})
        )
        secret = get(kube, namespace, "secret", "demo-progress")
        token = base64.b64decode(secret["data"]["token"]).decode()
        url = f"http://127.0.0.1:{op.progress_port}/v1/namespaces/{namespace}/rlruns/demo/progress"
        report = Progress(run_id="demo", step=1, max_steps=60, trainer_startup=read_trainer_startup(tmp_path),
                          updated_at=datetime.now(UTC))  # fmt: skip
        response = httpx.post(url, content=report.model_dump_json(by_alias=True), timeout=5,
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert response.status_code == 202
        st = wait_for(lambda: run_status(kube, namespace)["startup"][0].get("firstStepSeconds") is not None
                      and run_status(kube, namespace), 30, "runtime phases")  # fmt: skip
        entry = st["startup"][0]
        assert (entry["rendezvousSeconds"], entry["modelLoadedSeconds"], entry["firstStepSeconds"]) == (
            20,
            35,
            50,
        )
        wait_for(lambda: events(kube, namespace).count("StartupTimings") == 1, 20, "one StartupTimings Event")
        samples = _scrape(port)  # the Event's pass also published: its status write came first
        assert _latest(samples, namespace) == {phase: entry[key] for phase, key in PHASES.items()}
        assert {phase: _observed(samples, phase) - before[phase] for phase in PHASES} == dict.fromkeys(
            PHASES, 1
        )
        assert _observed(_scrape(port), "first_step") - before["first_step"] == 1  # once per attempt

        kube.kubectl("delete", "rlrun", "demo", "-n", namespace, "--wait=true")
        wait_for(lambda: not _latest(_scrape(port), namespace), 30, "a deleted run's series removed")
