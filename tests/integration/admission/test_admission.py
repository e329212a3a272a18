"""Admission: invalid RLRun specs are rejected by a real kube-apiserver (schema + CEL of the generated CRD),
each with a message that names the field and the fix; and `rlrun render`/`rlrun local` (pydantic) reject the
same spec offline with the same words. Valid examples are accepted and defaulted exactly as pydantic does.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rlrun.operator import api, names
from rlrun.operator.crd import crd_yaml

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def run_doc(name: str = "adm", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name},
        "spec": spec or {},
    }


@dataclass(frozen=True)
class Case:
    id: str
    doc: dict[str, Any]
    expect: tuple[str, ...]
    """Substrings of the API server's error (field path and message)."""
    py_expect: tuple[str, ...] = field(default=())
    """Substrings of pydantic's error; empty means 'same as expect minus the field path prefix'."""


LONG = "r" * (names.MAX_RUN_NAME_LENGTH + 1)
CASES = [
    Case(
        "tp-not-dividing-gpus",
        run_doc(spec={"inference": {"gpusPerReplica": 3, "tensorParallelSize": 2}}),
        ("spec.inference", api.MSG_TP),
    ),
    Case(
        "tp-on-cpu-inference",
        run_doc(spec={"inference": {"gpusPerReplica": 0, "tensorParallelSize": 2}}),
        ("spec.inference", api.MSG_TP),
    ),
    Case(
        "vllm-engine-on-cpu-pods",
        run_doc(spec={"inference": {"engine": "vllm", "gpusPerReplica": 0}}),
        ("spec.inference", api.MSG_ENGINE_GPU),
    ),
    Case(
        "batch-not-multiple-of-group",
        run_doc(spec={"orchestrator": {"batchSize": 30, "groupSize": 8}}),
        ("spec.orchestrator", "orchestrator.batchSize", "must be a multiple of orchestrator.groupSize"),
    ),
    Case(
        "zero-trainer-nodes",
        run_doc(spec={"trainer": {"nodes": 0}}),
        ("spec.trainer.nodes", "greater than or equal to 1"),
        ("trainer.nodes", "greater than or equal to 1"),
    ),
    Case(
        "ranks-not-one-per-gpu",
        run_doc(spec={"trainer": {"gpusPerNode": 8, "processesPerNode": 4}}),
        ("spec.trainer", api.MSG_PROCS),
    ),
    Case(
        "gpus-in-resources",
        run_doc(spec={"trainer": {"resources": {"limits": {"nvidia.com/gpu": 8}}}}),
        ("spec.trainer.resources", api.MSG_GPU_IN_RESOURCES),
    ),
    Case(
        "claim-and-storage-class",
        run_doc(spec={"storage": {"existingClaim": "data", "storageClassName": "fast"}}),
        ("spec.storage", api.MSG_STORAGE_EXCLUSIVE),
    ),
    Case(
        "upload-without-target",
        run_doc(spec={"sampleUpload": {"enabled": True}}),
        (
            "spec.sampleUpload",
            "sampleUpload.enabled needs sampleUpload.presignEndpoint or sampleUpload.bucket",
        ),
    ),
    Case(
        "upload-both-modes",
        run_doc(spec={"sampleUpload": {"enabled": True, "bucket": "b", "presignEndpoint": "https://p/x"}}),
        ("spec.sampleUpload", api.MSG_UPLOAD_BOTH),
    ),
    Case(
        "credentials-without-bucket",
        run_doc(spec={"sampleUpload": {"presignEndpoint": "https://p/x", "credentialsSecret": "s3"}}),
        ("spec.sampleUpload", api.MSG_UPLOAD_CREDS),
    ),
    Case(
        "package-credentials-without-index",
        run_doc(spec={"envWorkers": {"packages": {"requirements": ["x"], "credentialsSecret": "s"}}}),
        ("spec.envWorkers.packages", api.MSG_PACKAGES_CREDS),
    ),
    Case(
        "backoff-cap-below-base",
        run_doc(spec={"failurePolicy": {"backoffSeconds": 60, "backoffMaxSeconds": 10}}),
        ("spec.failurePolicy", api.MSG_BACKOFF),
    ),
    Case(
        "reserved-pod-label",
        run_doc(spec={"podLabels": {"app.kubernetes.io/instance": "other"}}),
        ("spec.podLabels", api.MSG_LABELS_RESERVED),
    ),
    Case(
        "reserved-env",
        run_doc(spec={"env": [{"name": "RUN_ID", "value": "x"}]}),
        ("spec.env", api.MSG_ENV_RESERVED),
    ),
    Case(
        "micro-batch-over-batch",
        run_doc(spec={"orchestrator": {"batchSize": 8, "groupSize": 8}, "trainer": {"microBatchSize": 16}}),
        ("spec", api.MSG_MICRO_BATCH),
    ),
    Case("name-too-long", run_doc(name=LONG), ("metadata.name", api.MSG_NAME_LENGTH)),
    Case("name-not-dns-1035", run_doc(name="1run"), ("metadata.name", api.MSG_NAME_FORM)),
    Case(
        "too-many-workers-per-replica",
        run_doc(spec={"envWorkers": {"workersPerReplica": 65}}),
        ("spec.envWorkers.workersPerReplica", "less than or equal to 64"),
        ("envWorkers.workersPerReplica", "less than or equal to 64"),
    ),
    Case(
        "bad-pull-policy",
        run_doc(spec={"images": {"pullPolicy": "Sometimes"}}),
        ("spec.images.pullPolicy", "Unsupported value", "IfNotPresent"),
        ("images.pullPolicy", "IfNotPresent"),
    ),
    Case(
        "environment-id-not-a-path-component",
        run_doc(spec={"envWorkers": {"environment": {"id": "../etc"}}}),
        ("spec.envWorkers.environment.id", "should match"),
        ("envWorkers.environment.id", "should match pattern"),
    ),
    Case(
        "typo-field",
        run_doc(spec={"trainer": {"gpuPerNode": 8}}),
        ('unknown field "spec.trainer.gpuPerNode"',),
        ("trainer.gpuPerNode", "Extra inputs are not permitted"),
    ),
    Case(
        "bad-storage-size",
        run_doc(spec={"storage": {"size": "lots"}}),
        ("spec.storage.size", "should match"),
        ("storage.size", "should match pattern"),
    ),
    # Quantities everywhere one is taken: a bad one used to pass admission and fail later, at the child.
    Case(
        "bad-cpu-request",
        run_doc(spec={"trainer": {"resources": {"requests": {"cpu": "many"}}}}),
        ("spec.trainer.resources.requests.cpu", "should match"),
        ("trainer.resources.requests.cpu", "should match pattern"),
    ),
    Case(
        "bad-memory-limit",
        run_doc(spec={"inference": {"resources": {"limits": {"memory": "16 GB"}}}}),
        ("spec.inference.resources.limits.memory", "should match"),
        ("inference.resources.limits.memory", "should match pattern"),
    ),
    # Strict types where the CRD is strict: pydantic used to coerce these, the API server never did.
    Case(
        "suspend-not-a-boolean",
        run_doc(spec={"suspend": "yes"}),
        ("spec.suspend", "must be of type boolean"),
        ("spec.suspend", "Input should be a valid boolean"),
    ),
    Case(
        "nodes-as-a-string",
        run_doc(spec={"trainer": {"nodes": "2"}}),
        ("spec.trainer.nodes", "must be of type integer"),
        ("trainer.nodes", "Input should be a valid integer"),
    ),
    Case(
        "upload-enabled-as-a-number",
        run_doc(spec={"sampleUpload": {"enabled": 1, "bucket": "b"}}),
        ("spec.sampleUpload.enabled", "must be of type boolean"),
        ("sampleUpload.enabled", "Input should be a valid boolean"),
    ),
]


def _py_expect(case: Case) -> tuple[str, ...]:
    # The CEL messages and pydantic's are the same strings; only the API server prefixes the field path.
    return case.py_expect or case.expect[1:]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pydantic_rejects_with_the_same_message(case: Case):
    with pytest.raises(ValidationError) as err:
        api.RLRun.model_validate(copy.deepcopy(case.doc))
    for part in _py_expect(case):
        assert part in str(err.value), f"{part!r} not in pydantic error:\n{err.value}"


def test_table_is_big_enough():
    assert len(CASES) >= 15


# ------------------------------------------------------------------------------- real API server


@pytest.fixture(scope="module")
def crd_installed(apiserver):
    apiserver.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crd_yaml())
    apiserver.kubectl("wait", "--for=condition=Established", f"crd/{names.CRD_NAME}", "--timeout=60s")
    return apiserver


def _create(kube, namespace: str, doc: dict[str, Any], *extra: str):
    return kube.kubectl("create", "-n", namespace, "-f", "-", *extra, input=json.dumps(doc), check=False)


@pytest.mark.cluster
def test_api_server_rejects_every_invalid_spec(crd_installed, namespace):
    """One namespace, every case: each create fails with the field path and the message."""
    wrong = []
    for case in CASES:
        proc = _create(crd_installed, namespace, case.doc)
        if proc.returncode == 0:
            wrong.append(f"{case.id}: accepted")
            continue
        missing = [p for p in case.expect if p not in proc.stderr]
        if missing:
            wrong.append(f"{case.id}: missing {missing} in: {proc.stderr.strip()}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.cluster
def test_api_server_accepts_examples_and_defaults_like_pydantic(crd_installed, namespace):
    for path in EXAMPLES:
        doc = yaml.safe_load(path.read_text())
        proc = _create(crd_installed, namespace, doc, "-o", "json")
        assert proc.returncode == 0, f"{path.name}: {proc.stderr}"
        stored = json.loads(proc.stdout)["spec"]
        # The server's defaulting (from the generated CRD) fills in exactly what pydantic does.
        want = api.RLRunSpec.model_validate(doc["spec"]).model_dump(by_alias=True)
        assert _prune(stored) == _prune(want), path.name


def _prune(value: Any) -> Any:
    """Drop nulls and empty collections: "absent" and "empty" mean the same to both sides."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _start(kube, namespace: str, name: str) -> None:
    patch = {"status": {"startTime": "2026-01-01T00:00:00Z", "phase": "Running"}}
    kube.kubectl(
        "patch",
        "rlrun",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(patch),
    )


def _patch_spec(kube, namespace: str, name: str, spec: dict[str, Any]):
    return kube.kubectl(
        "patch", "rlrun", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec}), check=False
    )


@pytest.mark.cluster
def test_model_and_trainer_shape_are_immutable_once_started(crd_installed, namespace):
    kube = crd_installed
    assert _create(kube, namespace, run_doc("imm", {"trainer": {"nodes": 2}})).returncode == 0
    # Before the run started, both may change (a Pending run is still being set up).
    assert _patch_spec(kube, namespace, "imm", {"model": {"name": "org/other"}}).returncode == 0
    assert _patch_spec(kube, namespace, "imm", {"trainer": {"nodes": 3}}).returncode == 0
    _start(kube, namespace, "imm")

    proc = _patch_spec(kube, namespace, "imm", {"model": {"name": "org/third"}})
    assert proc.returncode != 0 and api.MSG_MODEL_IMMUTABLE in proc.stderr and "spec.model" in proc.stderr
    proc = _patch_spec(kube, namespace, "imm", {"trainer": {"nodes": 4}})
    assert proc.returncode != 0 and api.MSG_TRAINER_SHAPE_IMMUTABLE in proc.stderr
    proc = _patch_spec(kube, namespace, "imm", {"trainer": {"processesPerNode": 2}})
    assert proc.returncode != 0 and api.MSG_TRAINER_SHAPE_IMMUTABLE in proc.stderr
    # What may change in a running run still can (scaling env-workers, restart budget).
    ok = _patch_spec(
        kube, namespace, "imm", {"envWorkers": {"replicas": 3}, "failurePolicy": {"maxRestarts": 9}}
    )
    assert ok.returncode == 0, ok.stderr


@pytest.mark.cluster
def test_resume_from_cannot_be_added_changed_or_removed_after_creation(crd_installed, namespace):
    """A fork's parent is fixed at creation, even before the run started: the operator admitted (or
    refused) it, linked its checkpoint and took its volume on that basis."""
    kube = crd_installed
    fork = {"resumeFrom": {"run": "parent", "step": 4}}
    assert _create(kube, namespace, run_doc("plain")).returncode == 0
    assert _create(kube, namespace, run_doc("fork", fork)).returncode == 0
    for name, spec in (
        ("plain", fork),  # added
        ("fork", {"resumeFrom": {"run": "parent", "step": 6}}),  # changed
        ("fork", {"resumeFrom": {"run": "other", "step": 4}}),
        ("fork", {"resumeFrom": None}),  # removed (a merge patch's null)
    ):
        proc = _patch_spec(kube, namespace, name, spec)
        assert proc.returncode != 0 and api.MSG_RESUME_FROM_IMMUTABLE in proc.stderr, (spec, proc.stderr)
        assert "spec.resumeFrom" in proc.stderr
    stored = json.loads(kube.kubectl("get", "rlrun", "fork", "-n", namespace, "-o", "json").stdout)
    assert stored["spec"]["resumeFrom"] == fork["resumeFrom"]
    # the rest of a fork's spec stays editable, and re-applying the same resumeFrom is no change
    ok = _patch_spec(kube, namespace, "fork", {**fork, "failurePolicy": {"maxRestarts": 9}})
    assert ok.returncode == 0, ok.stderr


@pytest.mark.cluster
def test_rendered_children_of_a_stored_run_are_accepted_by_the_api_server(crd_installed, namespace):
    """The RLRun as the API server returns it (defaults, uid) parses, and every child it renders passes the
    real 1.36 API server's validation (server-side apply dry run with the operator's field manager)."""
    from rlrun.operator.crd import dump_yaml_stream
    from rlrun.operator.render import render_children

    for path in EXAMPLES:
        proc = _create(crd_installed, namespace, yaml.safe_load(path.read_text()), "-o", "json")
        assert proc.returncode == 0, proc.stderr
        run = api.RLRun.model_validate(json.loads(proc.stdout))
        assert run.metadata.uid and run.metadata.namespace == namespace
        stream = dump_yaml_stream(render_children(run, trainer_attempt=1))
        applied = crd_installed.kubectl(
            "apply", "--server-side", f"--field-manager={names.FIELD_MANAGER}", "--dry-run=server",
            "-n", namespace, "-f", "-", input=stream, check=False,
        )  # fmt: skip
        assert applied.returncode == 0, f"{path.name}: {applied.stderr}"
        assert applied.stdout.count("serverside-applied") == len(render_children(run)), applied.stdout


@pytest.mark.cluster
def test_printer_columns_show_phase_step_reward_restarts(crd_installed, namespace):
    kube = crd_installed
    assert _create(kube, namespace, run_doc("cols")).returncode == 0
    status = {"status": {"phase": "Running", "restarts": 1, "progress": {"step": 12, "rewardMean": 0.75}}}
    kube.kubectl(
        "patch",
        "rlr",
        "cols",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    header, row = kube.kubectl("get", "rlr", "cols", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "STEP", "REWARD", "RESTARTS", "AGE"]
    assert row.split()[:5] == ["cols", "Running", "12", "0.75", "1"]
