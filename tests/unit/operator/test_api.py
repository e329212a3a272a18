"""The API models: examples parse, the runtime config derived from a spec, name limits, restart backoff."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rlrun.operator import names
from rlrun.operator.api import FailurePolicy, RLRun, RLRunStatus, check_run_name, to_runtime_config
from rlrun.runtime.config import RuntimeConfig

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


def test_there_are_the_three_examples():
    assert {p.stem for p in EXAMPLES} >= {"color-codeword", "gpu-vlm-single-node", "multi-node"}


def test_color_codeword_is_the_tiny_cpu_run(load_run):
    run = load_run(next(p for p in EXAMPLES if p.stem == "color-codeword"))
    s = run.spec
    assert s.model.name == "builtin:tiny-qwen2-vl" and s.env_workers.environment.id == "color-codeword"
    assert (s.trainer.nodes, s.trainer.gpus_per_node, s.trainer.ranks_per_node) == (1, 0, 2)
    assert (s.orchestrator.batch_size, s.orchestrator.group_size) == (128, 8)
    assert s.inference.gpus_per_replica == 0


def test_runtime_config_carries_the_spec_and_nothing_kubernetes(example: RLRun):
    cfg = to_runtime_config(example.metadata.name, example.spec)
    assert cfg.run_id == example.metadata.name and cfg.asset_root == "/data/outputs"
    assert cfg.trainer.processes_per_node == example.spec.trainer.ranks_per_node
    assert cfg.orchestrator.batch_size == example.spec.orchestrator.batch_size
    assert cfg.env_workers.environment.id == example.spec.env_workers.environment.id
    text = cfg.to_json()
    for k8s_only in ("resources", "scheduling", "credentialsSecret", "gpusPerNode"):
        assert k8s_only not in text
    assert RuntimeConfig.model_validate_json(text) == cfg  # the ConfigMap content loads back


def test_local_mode_overrides_the_asset_root(make_run):
    cfg = to_runtime_config("demo", make_run().spec, asset_root="/tmp/rlrun-local")
    assert str(cfg.run_dir) == "/tmp/rlrun-local/run_demo"


@pytest.mark.parametrize(("gpus", "procs", "ranks"), [(0, None, 1), (0, 3, 3), (8, None, 8), (4, 4, 4)])
def test_ranks_per_node_default(gpus, procs, ranks, make_run):
    trainer = {"gpusPerNode": gpus} | ({"processesPerNode": procs} if procs else {})
    assert make_run({"trainer": trainer}).spec.trainer.ranks_per_node == ranks


def test_max_run_name_is_derived_from_the_longest_child_name():
    # "-inference-255" (a StatefulSet pod hostname) is the longest suffix (63 - 14 = 49), but the inference
    # StatefulSet's own name binds first: its pods' controller-revision-hash label is <name>-<10 chars>.
    assert len(names.LONGEST_NAME_SUFFIX) == len(f"-inference-{names.MAX_INFERENCE_REPLICAS - 1}") == 14
    assert names.MAX_RUN_NAME_LENGTH == names.STATEFULSET_NAME_MAX - len("-inference") == 42
    check_run_name("a" * 42)
    with pytest.raises(ValueError, match="at most 42 characters"):
        check_run_name("a" * 43)
    with pytest.raises(ValueError, match="DNS-1035"):
        check_run_name("Upper")


def test_unknown_spec_fields_are_rejected_but_server_metadata_is_ignored(make_run):
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        make_run({"trainer": {"gpuPerNode": 1}})
    run = RLRun.model_validate(
        {"metadata": {"name": "x", "resourceVersion": "7", "managedFields": []}, "spec": {}}
    )
    assert run.metadata.name == "x"


def test_status_reads_what_the_api_server_returns():
    status = RLRunStatus.model_validate(
        {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "components": {"envWorkers": {"ready": 1, "desired": 2}},
            "progress": {"step": 3, "rewardMean": 0.5},
            "someFutureField": 1,
        }
    )
    assert status.components.env_workers.desired == 2 and status.progress.step == 3


def test_backoff_doubles_and_is_capped():
    policy = FailurePolicy(backoff_seconds=10, backoff_max_seconds=35)
    assert [policy.backoff(n) for n in range(4)] == [10, 20, 35, 35]


@pytest.mark.parametrize("env_id", ["text-reverse", "my-task", "my_pkg.envs:make_env", "pkg:Cls.build"])
def test_environment_ids_are_names_or_import_paths(make_run, env_id):
    spec = make_run({"envWorkers": {"environment": {"id": env_id}}}).spec
    assert to_runtime_config("demo", spec).env_workers.environment.id == env_id


@pytest.mark.parametrize("env_id", ["../x", "a:b:c", "pkg:", "pkg/mod:f", "-x"])
def test_environment_ids_that_are_neither_are_refused(make_run, env_id):
    with pytest.raises(ValidationError, match="String should match pattern"):
        make_run({"envWorkers": {"environment": {"id": env_id}}})


def test_package_index_credentials_need_an_index(make_run):
    with pytest.raises(ValidationError, match="credentialsSecret is only used with an index"):
        make_run({"envWorkers": {"packages": {"requirements": ["x"], "credentialsSecret": "s"}}})
    spec = make_run(
        {"envWorkers": {"packages": {"indexUrl": "https://p/simple", "credentialsSecret": "s"}}}
    ).spec
    assert (
        "credentialsSecret"
        not in to_runtime_config("demo", spec).model_dump(by_alias=True)["envWorkers"]["packages"]
    )


def test_package_install_timeout_reaches_the_runtime_config_and_is_bounded(make_run):
    spec = make_run({"envWorkers": {"packages": {"requirements": ["x"], "installTimeoutSeconds": 120}}}).spec
    runtime = to_runtime_config("demo", spec).env_workers.packages
    assert runtime.install_timeout_seconds == 120
    with pytest.raises(ValidationError, match="installTimeoutSeconds"):
        make_run({"envWorkers": {"packages": {"installTimeoutSeconds": 0}}})


def test_max_seq_len_reaches_the_runtime_config_and_is_bounded(make_run):
    assert to_runtime_config("demo", make_run({}).spec).trainer.max_seq_len is None  # no limit by default
    spec = make_run({"trainer": {"maxSeqLen": 4096}}).spec
    assert to_runtime_config("demo", spec).trainer.max_seq_len == 4096
    for too_small in (0, 15):
        with pytest.raises(ValidationError, match=r"trainer\.maxSeqLen"):
            make_run({"trainer": {"maxSeqLen": too_small}})
