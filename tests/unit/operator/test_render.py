"""Rendered children: valid for Kubernetes 1.36 (kubernetes-validate --strict), wired as ARCHITECTURE.md
says (owner, labels, env, mounts, security, GPUs, torchrun), deterministic, and within name limits."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from rlrun import pod_contract
from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render import render_children

K8S_VERSION = "1.36"
KINDS = [
    ("PersistentVolumeClaim", "-assets"),
    ("ConfigMap", "-config"),
    ("Service", "-inference"),
    ("StatefulSet", "-inference"),
    ("Service", "-envs"),
    ("Deployment", "-envs"),
    ("Service", "-orchestrator"),
    ("Job", "-orchestrator"),
    ("Service", "-trainer"),
    ("Job", "-trainer"),
    ("NetworkPolicy", "-net"),
]


def by_name(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def pods(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["spec"]["template"] for c in children if c["kind"] in ("Deployment", "StatefulSet", "Job")]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_child_validates_strictly(example: RLRun):
    for child in render_children(example, trainer_attempt=2):
        try:
            kubernetes_validate.validate(child, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(map(str, e.path))
            raise AssertionError(f"{child['kind']}/{child['metadata']['name']}: {path}: {e.message}") from e


def test_the_strict_validator_catches_a_typo(example: RLRun):
    """Guards the test above: a misspelt pod field must fail validation."""
    job = copy.deepcopy(by_name(render_children(example))[("Job", f"{example.metadata.name}-trainer")])
    job["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_children_in_order_with_owner_and_standard_labels(example: RLRun):
    run = example.metadata.name
    children = render_children(example)
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [(k, run + s) for k, s in KINDS]
    for c in children:
        meta = c["metadata"]
        assert meta["namespace"] == "team"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "rlrun.dev/v1alpha1",
                "kind": "RLRun",
                "name": run,
                "uid": "0b7c1c5e-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels[names.LABEL_NAME] == "rlrun" and labels[names.LABEL_INSTANCE] == run
        assert labels[names.LABEL_COMPONENT]


def test_rendering_is_pure_and_deterministic(example: RLRun):
    before = example.model_dump()
    assert render_children(example) == render_children(example)
    assert example.model_dump() == before


def test_every_pod_gets_identity_caps_mounts_and_a_non_root_context(example: RLRun):
    run = example.metadata.name
    for template in pods(render_children(example)):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 1000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in spec["volumes"]}
        claim = example.spec.storage.existing_claim or f"{run}-assets"
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim
        assert volumes["config"]["configMap"]["name"] == f"{run}-config"
        assert template["metadata"]["annotations"][names.ANNOTATION_CONFIG_HASH]
        for c in spec["containers"]:
            env = env_of(c)
            assert env["RUN_ID"] == run
            assert env["RLRUN_ASSET_ROOT"] == "/data/outputs"
            assert env["RLRUN_CONFIG"] == "/etc/rlrun/config.json"
            for key, value in names.NATIVE_THREAD_ENV:
                assert env[key] == value, key
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert mounts["/data"]["name"] == "data" and mounts["/etc/rlrun"]["readOnly"] is True
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}


def test_trainer_is_an_indexed_job_wired_for_torchrun(make_run):
    run = make_run({"trainer": {"nodes": 4, "gpusPerNode": 8}, "transport": {"basePort": 6000}}, name="big")
    children = by_name(render_children(run, trainer_attempt=3))
    job = children[("Job", "big-trainer")]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 4
    assert spec["backoffLimit"] == 0 and spec["suspend"] is False
    assert job["metadata"]["labels"][names.LABEL_TRAINER_ATTEMPT] == "3"
    pod = spec["template"]
    assert pod["metadata"]["labels"][names.LABEL_TRAINER_ATTEMPT] == "3"
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["subdomain"] == "big-trainer"
    (c,) = pod["spec"]["containers"]
    env = env_of(c)
    assert env["MASTER_ADDR"] == "big-trainer-0.big-trainer"
    assert env["MASTER_PORT"] == "29500" and env["NNODES"] == "4" and env["NPROC_PER_NODE"] == "8"
    assert env["NODE_RANK"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert c["command"] == [*pod_contract.LOG_WRAPPER, "torchrun"]
    assert c["args"][-2:] == ["-m", "rlrun.runtime.trainer"]
    for flag in ("--nnodes=$(NNODES)", "--nproc-per-node=$(NPROC_PER_NODE)", "--node-rank=$(NODE_RANK)"):
        assert flag in c["args"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 8 == c["resources"]["requests"]["nvidia.com/gpu"]
    assert {p["containerPort"] for p in c["ports"]} == {29500, 6001, 6002, pod_contract.METRICS_PORT}
    svc = children[("Service", "big-trainer")]["spec"]
    assert svc["clusterIP"] == "None" and svc["publishNotReadyAddresses"] is True
    assert svc["selector"][names.LABEL_COMPONENT] == "trainer"
    assert names.LABEL_TRAINER_ATTEMPT not in svc["selector"]  # the Service outlives attempts


def test_cpu_trainer_runs_the_requested_ranks_without_gpus(make_run):
    run = make_run({"trainer": {"gpusPerNode": 0, "processesPerNode": 2}})
    (c,) = by_name(render_children(run))[("Job", "demo-trainer")]["spec"]["template"]["spec"]["containers"]
    assert env_of(c)["NPROC_PER_NODE"] == "2"
    assert "nvidia.com/gpu" not in str(c["resources"])


def test_inference_gpu_runs_vllm_with_tensor_parallel(make_run):
    inference = {
        "replicas": 2,
        "gpusPerReplica": 4,
        "tensorParallelSize": 2,
        "extraArgs": ["--max-model-len=4096"],
    }
    run = make_run(
        {"model": {"name": "Qwen/Qwen2-VL-2B-Instruct", "revision": "abc"}, "inference": inference}
    )
    dep = by_name(render_children(run))[("StatefulSet", "demo-inference")]
    # a StatefulSet replaces a pod by deleting it first: never two pods' GPUs at once
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == run.spec.images.inference
    # vLLM's own virtualenv in the image: `python` on the PATH is rlrun's, which has no vLLM.
    assert c["command"] == [
        *pod_contract.LOG_WRAPPER,
        "/opt/vllm/bin/python",
        "-m",
        "rlrun.runtime.inference.vllm_server",
    ]
    args = c["args"]
    assert "--model" not in args and "--port" not in args  # from the config and $RLRUN_PORT
    assert args[args.index("--revision") + 1] == "abc"
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[-1] == "--max-model-len=4096"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"


def test_cpu_inference_runs_the_rlrun_engine(make_run):
    (c,) = by_name(render_children(make_run()))[("StatefulSet", "demo-inference")]["spec"]["template"][
        "spec"
    ]["containers"]
    assert (
        c["command"] == [*pod_contract.LOG_WRAPPER, "rlrun-inference"]
        and c["image"] == make_run().spec.images.runtime
    )
    assert env_of(c)["RLRUN_PORT"] == str(names.INFERENCE_PORT)


def test_every_inference_replica_is_addressed_by_its_own_stable_name(make_run):
    """A StatefulSet under a headless Service: each pod has a DNS name, and every role gets the list (the
    trainer reloads each replica, the orchestrator routes to those in sync), not one load-balanced name."""
    run = make_run({"inference": {"replicas": 3}})
    children = by_name(render_children(run))
    sts, svc = children[("StatefulSet", "demo-inference")], children[("Service", "demo-inference")]
    assert sts["spec"]["serviceName"] == "demo-inference" and sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"  # replicas start and recover independently
    assert (
        svc["spec"]["clusterIP"] == "None"
        and svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    )
    ns = run.metadata.namespace
    urls = [f"http://demo-inference-{i}.demo-inference.{ns}.svc:{names.INFERENCE_PORT}" for i in range(3)]
    for template in pods(list(children.values())):
        (c,) = template["spec"]["containers"]
        assert env_of(c)["RLRUN_INFERENCE_URLS"] == ",".join(urls)
    assert not any(k == "Deployment" and n == "demo-inference" for k, n in children)


def test_env_worker_replicas_follow_the_spec(make_run):
    dep = by_name(render_children(make_run({"envWorkers": {"replicas": 5}})))[("Deployment", "demo-envs")]
    assert dep["spec"]["replicas"] == 5
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"] == [
        *pod_contract.LOG_WRAPPER,
        "rlrun-env-worker",
    ]


def test_orchestrator_job_never_retries_and_gets_s3_credentials(make_run):
    run = make_run({"sampleUpload": {"enabled": True, "bucket": "b", "credentialsSecret": "s3-keys"}})
    children = by_name(render_children(run))
    job = children[("Job", "demo-orchestrator")]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["completions"] == 1
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["command"] == [*pod_contract.LOG_WRAPPER, "rlrun-orchestrator"]
    assert env_of(c)["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3-keys", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    trainer_env = env_of(children[("Job", "demo-trainer")]["spec"]["template"]["spec"]["containers"][0])
    assert "AWS_SECRET_ACCESS_KEY" not in trainer_env  # only the uploader sees the keys


def test_tracking_reaches_the_orchestrator_only_with_optional_credentials(make_run):
    tracking = {"mlflow": {"trackingUri": "https://mlflow.example"}, "credentialsSecret": "trackers"}
    run = make_run({"tracking": tracking})
    children = by_name(render_children(run))
    (c,) = children[("Job", "demo-orchestrator")]["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    for key in pod_contract.TRACKING_SECRET_ENV:  # a W&B-only Secret has no MLflow keys: each optional
        assert env[key] == {"secretKeyRef": {"name": "trackers", "key": key, "optional": True}}
    others = [
        c
        for pod in pods(list(children.values()))
        for c in pod["spec"]["containers"]
        if c["name"] != "orchestrator"
    ]
    assert others and not any(set(pod_contract.TRACKING_SECRET_ENV) & set(env_of(o)) for o in others)
    config = json.loads(children[("ConfigMap", "demo-config")]["data"]["config.json"])
    assert config["tracking"] == {
        "mlflow": {"trackingUri": "https://mlflow.example", "experiment": "rlrun"},
        "wandb": None,
    }


def test_existing_claim_means_no_pvc(make_run):
    children = render_children(make_run({"storage": {"existingClaim": "shared"}}))
    assert "PersistentVolumeClaim" not in {c["kind"] for c in children}


def test_storage_class_and_size_reach_the_pvc(make_run):
    pvc = render_children(make_run({"storage": {"storageClassName": "nfs", "size": "2Ti"}}))[0]
    assert pvc["spec"]["storageClassName"] == "nfs" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Ti"


def test_suspend_scales_to_zero_and_suspends_jobs(make_run):
    children = render_children(make_run({"suspend": True}))
    for c in children:
        if c["kind"] in ("Deployment", "StatefulSet"):
            assert c["spec"]["replicas"] == 0
        if c["kind"] == "Job":
            assert c["spec"]["suspend"] is True


def test_kueue_queues_only_the_trainer_created_suspended(make_run):
    jobs = {
        c["metadata"]["labels"][names.LABEL_COMPONENT]: c
        for c in render_children(make_run({"queueName": "team-a"}))
        if c["kind"] == "Job"
    }
    assert jobs["trainer"]["metadata"]["labels"][names.LABEL_KUEUE_QUEUE] == "team-a"
    assert jobs["trainer"]["spec"]["suspend"] is True  # Kueue admits it by resuming it
    assert names.LABEL_KUEUE_QUEUE not in jobs["orchestrator"]["metadata"]["labels"]
    assert jobs["orchestrator"]["spec"]["suspend"] is False


def test_user_env_labels_and_scheduling_reach_the_pods(make_run):
    run = make_run(
        {
            "env": [{"name": "WANDB_MODE", "value": "offline"}],
            "envFrom": [{"secretRef": {"name": "hf-token"}}],
            "podLabels": {"team": "rl"},
            "podAnnotations": {"note": "x"},
            "serviceAccountName": "runner",
            "images": {"pullSecrets": ["regcred"], "pullPolicy": "Always"},
            "trainer": {"scheduling": {"nodeSelector": {"gpu": "h100"}, "priorityClassName": "high"}},
        }
    )
    children = by_name(render_children(run))
    for template in pods(list(children.values())):
        spec, (c,) = template["spec"], template["spec"]["containers"]
        assert env_of(c)["WANDB_MODE"] == "offline" and c["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
        assert template["metadata"]["labels"]["team"] == "rl"
        assert template["metadata"]["annotations"]["note"] == "x"
        assert spec["serviceAccountName"] == "runner" and spec["imagePullSecrets"] == [{"name": "regcred"}]
        assert c["imagePullPolicy"] == "Always"
    trainer = children[("Job", "demo-trainer")]["spec"]["template"]["spec"]
    assert trainer["nodeSelector"] == {"gpu": "h100"} and trainer["priorityClassName"] == "high"
    assert "nodeSelector" not in children[("Deployment", "demo-envs")]["spec"]["template"]["spec"]


def test_config_change_changes_the_pod_hash(make_run):
    def hash_of(run: RLRun) -> str:
        return pods(render_children(run))[0]["metadata"]["annotations"][names.ANNOTATION_CONFIG_HASH]

    assert hash_of(make_run()) == hash_of(make_run())
    assert hash_of(make_run()) != hash_of(make_run({"orchestrator": {"maxSteps": 7}}))


def test_configmap_holds_the_runtime_config(make_run):
    cm = by_name(render_children(make_run({"orchestrator": {"maxSteps": 7}})))[("ConfigMap", "demo-config")]
    assert '"maxSteps": 7' in cm["data"]["config.json"] and '"runId": "demo"' in cm["data"]["config.json"]


def test_longest_allowed_name_keeps_every_child_name_a_dns_label(make_run):
    name = "r" * names.MAX_RUN_NAME_LENGTH
    spec = {
        "trainer": {"nodes": names.MAX_TRAINER_NODES},
        "inference": {"replicas": names.MAX_INFERENCE_REPLICAS},
    }
    children = render_children(make_run(spec, name=name))
    for c in children:
        assert len(c["metadata"]["name"]) <= 63
        for value in c["metadata"]["labels"].values():
            assert len(value) <= 63
    assert len(f"{name}-trainer-{names.MAX_TRAINER_NODES - 1}") <= 63
    assert len(f"{name}-inference-{names.MAX_INFERENCE_REPLICAS - 1}") <= 63
    # the StatefulSet's pods carry `controller-revision-hash: <StatefulSet>-<hash, up to 10 chars>`
    (sts,) = [c for c in children if c["kind"] == "StatefulSet"]
    assert len(sts["metadata"]["name"]) + len("-0123456789") == 63


def test_network_policy_admits_only_the_run_and_the_operator(make_run):
    (np,) = [c for c in render_children(make_run()) if c["kind"] == "NetworkPolicy"]
    spec = np["spec"]
    assert spec["podSelector"]["matchLabels"][names.LABEL_INSTANCE] == "demo"
    assert spec["ingress"][0]["from"][0]["podSelector"]["matchLabels"][names.LABEL_INSTANCE] == "demo"
    assert spec["ingress"][1]["ports"] == [{"protocol": "TCP", "port": names.ORCHESTRATOR_PORT}]
    # Prometheus, in whatever namespace, may scrape the metrics port and nothing else
    assert spec["ingress"][2] == {
        "from": [{"namespaceSelector": {}}],
        "ports": [{"protocol": "TCP", "port": pod_contract.METRICS_PORT}],
    }
    assert len(spec["ingress"]) == 3


def test_every_run_container_serves_metrics_on_the_named_port(make_run):
    """One port per pod, named for the chart's PodMonitor, and the env that tells the role to serve it."""
    containers = [c for pod in pods(render_children(make_run())) for c in pod["spec"]["containers"]]
    assert {c["name"] for c in containers} == {"inference", "env-workers", "orchestrator", "trainer"}
    for c in containers:
        assert {"name": "metrics", "containerPort": pod_contract.METRICS_PORT, "protocol": "TCP"} in c[
            "ports"
        ]
        assert env_of(c)[pod_contract.METRICS_PORT_ENV] == str(pod_contract.METRICS_PORT), c["name"]


def test_a_file_without_uid_renders_without_owner_references():
    run = RLRun.model_validate({"metadata": {"name": "offline"}, "spec": {}})
    for c in render_children(run):
        assert "ownerReferences" not in c["metadata"] and "namespace" not in c["metadata"]


def test_trainer_pods_get_the_grace_window_and_torchrun_a_little_less(make_run):
    run = make_run({"trainer": {"terminationGracePeriodSeconds": 90}}, name="g")
    job = by_name(render_children(run))[("Job", "g-trainer")]
    pod = job["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 90
    # torchrun SIGKILLs its ranks before the kubelet SIGKILLs the pod, and exits itself in time
    assert 0 < int(env_of(pod["containers"][0])["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]) < 90
