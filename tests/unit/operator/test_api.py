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
    # "-trainer-1023" (an Indexed Job pod hostname) and "-orchestrator" are the longest: 63 - 13 = 50.
    assert len(names.LONGEST_NAME_SUFFIX) == len(f"-trainer-{names.MAX_TRAINER_NODES - 1}") == 13
    assert names.MAX_RUN_NAME_LENGTH == 50
    check_run_name("a" * 50)
    with pytest.raises(ValueError, match="at most 50 characters"):
        check_run_name("a" * 51)
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
