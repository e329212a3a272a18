"""rlrun on a real single-node Kubernetes, through the user's own paths: `helm install` of the chart with
the operator image built from the Dockerfile, `kubectl apply` of the bundled CPU example (unchanged: its
default images are the ones built here, IfNotPresent finds them on the node), real pods run by a real
kubelet, Services resolved by CoreDNS, traffic through kube-proxy, the run volume a pre-made hostPath
PersistentVolume pre-bound to the claim the operator creates.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import RUN_UID, volume_for
from images import default_refs
from readme_env import build_wheel, readme_files, write_tree
from realnode import REPO, RealNode, tool_dir

NAMESPACE = "rlrun-system"
EXAMPLE = REPO / "manifests/examples/color-codeword.yaml"
IMAGE_BLIND_CEILING = 0.25  # 4 colours: a policy that ignores the image cannot beat 1/4


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _status(node: RealNode, run: str) -> dict[str, Any]:
    proc = node.kubectl("get", "rlrun", run, "-n", NAMESPACE, "-o", "json", check=False)
    return (json.loads(proc.stdout).get("status") or {}) if proc.returncode == 0 else {}


def _pods(node: RealNode, run: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={run}"
    return json.loads(node.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)[
        "items"
    ]


def _wait(predicate: Callable[[], Any], timeout: float, what: str, node: RealNode, run: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            events = node.kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False)
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; status: {json.dumps(_status(node, run))[:3000]}\n"
                f"events:\n{events.stdout[-3000:]}"
            )
        time.sleep(1)


def _phase(node: RealNode, run: str, *phases: str) -> Callable[[], bool]:
    def check() -> bool:
        phase = _status(node, run).get("phase")
        if phase == "Failed" and "Failed" not in phases:
            raise AssertionError(f"run {run} failed: {json.dumps(_status(node, run))[:3000]}")
        return phase in phases

    return check


def _example(name: str, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    doc["metadata"]["name"] = name
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = doc["spec"]
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value
    return doc


@pytest.fixture(scope="module")
def operator(realnode: RealNode) -> RealNode:
    """`helm install` exactly as the README says, with the chart's default image (built and imported)."""
    helm = tool_dir("tools/helm/fetch.sh", "RLRUN_HELM")
    if helm.is_dir():
        helm = helm / "helm"
    realnode.run(
        "env", f"KUBECONFIG={realnode.kubeconfig}", f"HOME={realnode.workdir}", str(helm),
        "install", "rlrun", str(REPO / "helm/rlrun"), "--namespace", NAMESPACE, "--create-namespace",
        "--wait", "--timeout", "5m", timeout=330,
    )  # fmt: skip
    return realnode


@pytest.mark.timeout(2400)
def test_helm_install_and_the_cpu_example_trains_to_succeeded(operator: RealNode) -> None:
    node, run = operator, "color-codeword"
    volume = volume_for(node, NAMESPACE, run)
    applied = time.monotonic()
    node.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    seen: dict[str, dict[str, Any]] = {}

    def finished() -> bool:
        for pod in _pods(node, run):
            seen[pod["metadata"]["name"]] = pod
        return _phase(node, run, "Succeeded")()

    first_step = _wait(
        lambda: (_status(node, run).get("progress") or {}).get("step"), 900, "step 1", node, run
    )
    node.timings["example_first_step_s"] = time.monotonic() - applied
    assert first_step >= 1
    _wait(finished, 1500, "Succeeded", node, run)
    node.timings["example_succeeded_s"] = time.monotonic() - applied

    st = _status(node, run)
    assert st["restarts"] == 0, st  # no restart spent on the start-up race (inference is slower to start)
    steps = yaml.safe_load(EXAMPLE.read_text())["spec"]["orchestrator"]["maxSteps"]
    assert st["progress"]["step"] == steps and st["progress"]["rewardMean"] > IMAGE_BLIND_CEILING, st[
        "progress"
    ]
    # NAME PHASE STEP REWARD RESTARTS AGE: what a user reads first
    table = node.kubectl("get", "rlr", run, "-n", NAMESPACE).stdout.splitlines()[1].split()
    assert table[1:3] == ["Succeeded", str(steps)] and table[4] == "0", table
    assert (
        float(table[3]) == pytest.approx(st["progress"]["rewardMean"])
        and float(table[3]) > IMAGE_BLIND_CEILING
    )
    # where the start went (issue 19): every phase of attempt 0 timed, in the order they happen
    [startup] = [s for s in st["startup"] if s["attempt"] == 0]
    phases = ["scheduledSeconds", "containersStartedSeconds", "modelLoadedSeconds", "firstStepSeconds"]
    assert all(startup.get(k) is not None for k in [*phases, "rendezvousSeconds"]), startup
    assert [startup[k] for k in phases] == sorted(startup[k] for k in phases), startup
    assert startup["firstStepSeconds"] < node.timings["example_first_step_s"] + 60, startup
    # retention's defaults pruned the tree as the run went: the newest 2 checkpoints, the newest 3 exports
    outputs = volume / f"outputs/run_{run}"
    checkpoints, exports = _complete(outputs / "checkpoints"), _complete(outputs / "weights")
    assert checkpoints[-1] == steps and len(checkpoints) <= 2 and 50 not in checkpoints, checkpoints
    assert exports[-1] == steps and len(exports) <= 3, exports
    rewards = [r["reward_mean"] for r in _jsonl(volume / f"outputs/run_{run}/orchestrator/metrics.jsonl")]
    # clear of the ceiling by the margin the vLLM e2e test asks (the node learns slower than local processes)
    assert sum(rewards[-10:]) / 10 >= IMAGE_BLIND_CEILING + 0.15, rewards
    orch = next(c for c in st["conditions"] if c["type"] == "OrchestratorReady")
    assert orch["reason"] == "Completed", orch

    # every pod ran our image, found on the node (never pulled), with the command `rlrun render` gives
    runtime = default_refs()["runtime"]
    components = {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in seen.values()}
    assert components == {"inference", "env-workers", "orchestrator", "trainer"}, components
    rendered = _rendered_commands(node, EXAMPLE)
    for pod in seen.values():
        for c in pod["spec"]["containers"]:
            assert c["image"] == runtime, (pod["metadata"]["name"], c["image"])
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        ran = [(c["name"], c.get("command"), c.get("args")) for c in pod["spec"]["containers"]]
        assert ran == rendered[component], (pod["metadata"]["name"], ran, rendered[component])
    # every pod's stdout/stderr also went to the volume (rlrun-podlog), one file per pod
    logs = volume / f"outputs/run_{run}/logs/attempt-0"
    for pod in seen.values():
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        log = logs / f"{component}-{pod['metadata']['name']}.log"
        assert log.is_file() and log.stat().st_size > 0, (log, sorted(p.name for p in logs.iterdir()))
    # the run has ended: `rlrun logs --attempt 0` reads the trainer's file from the volume
    _assert_attempt_logs_read_back(node, run, volume, attempt=0, pods=1)
    events = json.loads(node.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    pulled = [e["message"] for e in events if e.get("reason") in ("Pulled", "Pulling")]
    assert pulled and all("already present on machine" in m for m in pulled), pulled
    policies = json.loads(node.kubectl("get", "networkpolicy", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    assert [p["metadata"]["name"] for p in policies] == [f"{run}-net"]


def _complete(root: Path) -> list[int]:
    """Steps of the complete (DONE-marked) checkpoints or weight exports under `root`."""
    return sorted(int(p.name.removeprefix("step_")) for p in root.glob("step_*") if (p / "DONE").is_file())


def _rendered_commands(node: RealNode, file: Path) -> dict[str, list[tuple[str, Any, Any]]]:
    """Each component's containers (name, command, args) as `rlrun render` renders `file`: the pure renderer
    the operator runs, so a pod that ran anything else was changed on the way."""
    out = node.run(str(Path(sys.executable).with_name("rlrun")), "render", str(file), "-n", NAMESPACE).stdout
    rendered = {}
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] in ("Job", "Deployment", "StatefulSet"):
            template = doc["spec"]["template"]
            component = template["metadata"]["labels"]["app.kubernetes.io/component"]
            rendered[component] = [
                (c["name"], c.get("command"), c.get("args")) for c in template["spec"]["containers"]
            ]
    return rendered


def _assert_attempt_logs_read_back(node: RealNode, run: str, volume: Path, attempt: int, pods: int) -> None:
    """`rlrun logs --attempt N -c trainer` prints every trainer pod's log of that attempt from the volume
    (through a reader pod, deleted afterwards): the last line of each pod's file is in what it printed."""
    files = sorted((volume / f"outputs/run_{run}/logs/attempt-{attempt}").glob("trainer-*.log"))
    assert len(files) == pods, files
    read = node.run(
        str(Path(sys.executable).with_name("rlrun")), "logs", run, "-n", NAMESPACE, "-c", "trainer",
        "--attempt", str(attempt), "--kubeconfig", str(node.kubeconfig), timeout=300,
    )  # fmt: skip
    for file in files:
        last_line = file.read_text().strip().splitlines()[-1]
        assert last_line in read.stdout, (file.name, last_line, read.stdout[-2000:])
    reader = f"rlrun.dev/log-reader-of={run}"
    _wait(lambda: not json.loads(node.kubectl("get", "pods", "-n", NAMESPACE, "-l", reader, "-o", "json").stdout)[
        "items"], 120, "the log-reader pod's deletion", node, run)  # fmt: skip


def _trainer_log_tail(volume: Path, run: str, attempt: int, lines: int = 40) -> str:
    """The end of every trainer pod's log of `attempt` on the volume: what it did after SIGTERM."""
    files = sorted((volume / f"outputs/run_{run}/logs/attempt-{attempt}").glob("trainer-*.log"))
    return "\n".join(f"== {f.name}\n" + "\n".join(f.read_text().splitlines()[-lines:]) for f in files)


def _trainer_steps(volume: Path, run: str, rank: int) -> list[int]:
    path = volume / f"outputs/run_{run}/trainer/metrics_rank{rank}.jsonl"
    return [r["step"] for r in _jsonl(path)] if path.exists() else []


def _attempts(steps: list[int]) -> list[list[int]]:
    """Split a rank's step log into attempts: a new attempt starts where the step does not advance."""
    runs: list[list[int]] = []
    for step in steps:
        if not runs or step <= runs[-1][-1]:
            runs.append([])
        runs[-1].append(step)
    return runs


def _assert_resumed_from_checkpoints(steps: list[int], total: int, interval: int) -> None:
    """A rank's step log over all attempts: every step trained (none skipped); each later attempt starts
    right after a checkpoint, no later than where the previous one stopped; the last attempt runs to the end
    once, so the final weights saw each step exactly once. Checkpoint step_N holds N trained steps, so an
    attempt resumes AT a multiple of the interval (seen on the node: ... 9, 10 | 10, 11 ...); one stopped
    right at a checkpoint leaves no visible seam."""
    attempts = _attempts(steps)
    assert set(steps) == set(range(total)) and attempts[0][0] == 0, steps
    for before, after in itertools.pairwise(attempts):
        assert after[0] % interval == 0 and after[0] <= before[-1] + 1, (before[-1], after[0])
    assert attempts[-1] == list(range(attempts[-1][0], total)), attempts[-1]


SMALL = {  # two trainer pods of one rank each, sized so the whole run fits 2 cores
    "orchestrator.maxSteps": 40,
    "trainer.nodes": 2,
    "trainer.processesPerNode": 1,
    "trainer.checkpointInterval": 10,
    "trainer.resources": {"requests": {"cpu": "300m", "memory": "1Gi"}},
}


@pytest.mark.timeout(2400)
def test_two_trainer_pods_rendezvous_and_a_deleted_pod_restarts_the_group_from_its_checkpoint(
    operator: RealNode,
) -> None:
    node, run = operator, "two-nodes"
    volume = volume_for(node, NAMESPACE, run)
    node.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(_example(run, **SMALL)))
    outputs = volume / f"outputs/run_{run}"
    _wait(lambda: (outputs / "checkpoints/step_10/DONE").exists(), 900, "checkpoint 10", node, run)
    trainers = [
        p for p in _pods(node, run) if p["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    ]
    assert len(trainers) == 2
    master = f"{run}-trainer-0.{run}-trainer"
    for pod in trainers:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["MASTER_ADDR"] == master and pod["spec"]["subdomain"] == f"{run}-trainer"
    assert {p["spec"]["hostname"] for p in trainers} == {f"{run}-trainer-0", f"{run}-trainer-1"}
    assert (
        len({p["status"]["podIP"] for p in trainers}) == 2
    )  # two pods, two addresses: ranks talk over the pod network
    # kill rank 1's pod mid-run (a lost node): the operator restarts the whole group from the checkpoint
    victim = next(p for p in trainers if p["spec"]["hostname"].endswith("-1"))
    node.kubectl("delete", "pod", victim["metadata"]["name"], "-n", NAMESPACE, "--wait=false")
    _wait(_phase(node, run, "Succeeded"), 1500, "Succeeded after the restart", node, run)
    st = _status(node, run)
    assert st["restarts"] == 1 and st["progress"]["step"] == 40, st
    for rank in (0, 1):
        _assert_resumed_from_checkpoints(_trainer_steps(volume, run, rank), 40, 10)
    records = _jsonl(outputs / "trainer/metrics_rank0.jsonl")
    assert {r["world_size"] for r in records} == {2}
    # attempt 0's pods are gone (one deleted, the other stopped by the restart): both ranks' logs of it
    # are read back from the volume
    _assert_attempt_logs_read_back(node, run, volume, attempt=0, pods=2)


@pytest.mark.timeout(2400)
def test_suspend_keeps_the_volume_resume_continues_at_the_newest_checkpoint_and_a_fork_starts_from_it(
    operator: RealNode,
) -> None:
    node, run = operator, "suspended"
    volume = volume_for(node, NAMESPACE, run)
    doc = _example(run, **{**SMALL, "trainer.nodes": 1})
    node.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(doc))
    outputs = volume / f"outputs/run_{run}"
    # past checkpoint 10 by a few steps: a resume from the periodic checkpoint would retrain them
    _wait(lambda: len(_trainer_steps(volume, run, 0)) >= 14, 900, "step 13", node, run)
    node.kubectl("patch", "rlrun", run, "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    _wait(_phase(node, run, "Suspended"), 120, "Suspended", node, run)
    _wait(lambda: not _pods(node, run), 180, "every pod gone", node, run)
    node.kubectl("get", "pvc", f"{run}-assets", "-n", NAMESPACE)  # the volume stays
    trained = _trainer_steps(volume, run, 0)
    saved = _complete(outputs / "checkpoints")[-1]
    # The suspend's SIGTERM made the trainer checkpoint every finished step inside its grace window: the
    # checkpoint is the one after the last trained step, past the periodic 10
    assert saved == len(trained) > 10 and trained == list(range(saved)), (
        saved,
        trained,
        _trainer_log_tail(volume, run, 0),
    )
    node.kubectl("patch", "rlrun", run, "-n", NAMESPACE, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    _wait(_phase(node, run, "Succeeded"), 1500, "Succeeded after resume", node, run)
    steps = _trainer_steps(volume, run, 0)
    assert steps == trained + list(range(saved, 40)), (saved, steps)  # its first step: the one after it
    assert _complete(outputs / "checkpoints")[-1] == 40

    # a fork from the finished run's last checkpoint (issue 19): it shares the volume, names its parent,
    # and trains on from the parent's weights
    fork = "forked"
    doc = _example(fork, **{**SMALL, "trainer.nodes": 1, "orchestrator.maxSteps": 42})
    doc["spec"]["resumeFrom"] = {"run": run, "step": 40}
    node.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(doc))
    _wait(_phase(node, fork, "Succeeded"), 900, "the fork Succeeded", node, fork)
    st = _status(node, fork)
    assert st["resumedFrom"] == {"run": run, "step": 40} and st["progress"]["step"] == 42, st
    assert _trainer_steps(volume, fork, 0) == [40, 41]
    assert _checksum(volume / f"outputs/run_{fork}/weights/step_40") == _checksum(outputs / "weights/step_40")
    events = node.kubectl("get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={fork}")
    assert "Forked" in events.stdout, events.stdout


def _checksum(weights: Path) -> str:
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(weights / "model.safetensors").items()):
        digest.update(name.encode() + tensor.float().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.timeout(900)
def test_a_spent_wallclock_budget_stops_the_run_on_a_checkpoint_as_succeeded(operator: RealNode) -> None:
    node, run = operator, "budgeted"
    volume = volume_for(node, NAMESPACE, run)
    doc = _example(run, **{**SMALL, "trainer.nodes": 1, "orchestrator.maxSteps": 1000})
    doc["spec"]["budget"] = {"maxWallclockSeconds": 75}
    node.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(doc))
    _wait(_phase(node, run, "Succeeded"), 600, "Succeeded on the budget", node, run)
    st = _status(node, run)
    assert st["reason"] == "BudgetExhausted" and st["restarts"] == 0, st
    assert st["gpuHoursUsed"] == 0, st  # a CPU run holds no GPU
    _wait(lambda: not _pods(node, run), 180, "pods gone", node, run)  # the trainer's grace window is over
    trained = _trainer_steps(volume, run, 0)
    # stopped well short of maxSteps, on a checkpoint of every trained step (written in the grace window of
    # the pods' graceful deletion) to resume or fork from
    checkpoints = _complete(volume / f"outputs/run_{run}/checkpoints")
    assert 1 <= len(trained) < 1000 and checkpoints and checkpoints[-1] == len(trained), (
        checkpoints,
        trained,
        _trainer_log_tail(volume, run, 0),
    )


@pytest.mark.timeout(1200)
def test_the_env_workers_install_the_readme_environment_from_wheels_on_the_volume_and_train_on_it(
    operator: RealNode, tmp_path: Path
) -> None:
    """Issue 16's cluster path, air-gapped: the README's own package, built into a wheel, put on the run
    volume; the env-worker pod (uid 1000) installs it at start (envWorkers.packages) and the run trains on it."""
    node, run = operator, "word-echo"
    volume = volume_for(node, NAMESPACE, run)
    files = readme_files()
    write_tree(tmp_path, files)
    wheels = volume / "wheels"
    wheel = build_wheel(tmp_path / "word-echo", wheels)
    for path in (wheels, wheel):
        os.chown(path, RUN_UID, RUN_UID)
    readme_spec = yaml.safe_load(files["word-echo.yaml"])["spec"]
    doc = _example(run, **{"trainer.nodes": 1, "trainer.resources": SMALL["trainer.resources"]})
    doc["spec"]["orchestrator"].update(readme_spec["orchestrator"])
    doc["spec"]["trainer"].update(readme_spec["trainer"])
    doc["spec"]["envWorkers"]["environment"] = readme_spec["envWorkers"]["environment"]
    doc["spec"]["envWorkers"]["packages"] = {
        "requirements": ["word-echo==0.1.0"],
        "wheelsDir": "/data/wheels",
    }
    node.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(doc))
    _wait(_phase(node, run, "Succeeded"), 900, "Succeeded", node, run)
    steps = readme_spec["orchestrator"]["maxSteps"]
    assert _status(node, run)["progress"]["step"] == steps
    outputs = volume / f"outputs/run_{run}"
    [venv] = [p.parent for p in (outputs / "envs").glob("venv-*/DONE")]  # built once, on the volume
    assert list(venv.glob("lib/python3*/site-packages/word_echo/words.jsonl")), "the package and its dataset"
    rows = pq.read_table(sorted(outputs.rglob("samples/step_*.parquet"))).to_pylist()
    assert rows and {row["env"] for row in rows} == {"word-echo"}  # every rollout came from the package


@pytest.mark.timeout(600)
def test_a_volume_the_pods_cannot_write_fails_the_run_at_once_with_the_reason(operator: RealNode) -> None:
    node, run = operator, "root-volume"
    volume_for(node, NAMESPACE, run, owner=0, mode=0o755)  # a root-owned hostPath: fsGroup does not apply
    node.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(_example(run)))
    _wait(_phase(node, run, "Failed"), 300, "Failed", node, run)
    st = _status(node, run)
    assert st["reason"] == "VolumeNotWritable" and st["restarts"] == 0, st
    assert "is not writable by uid 1000" in st["message"] and "owned by 0:0 with mode 0755" in st["message"]
    events = node.kubectl(
        "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={run}"
    ).stdout
    assert "VolumeNotWritable" in events
    node.kubectl("delete", "rlrun", run, "-n", NAMESPACE, "--wait=true", timeout=180)
