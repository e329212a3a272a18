"""Inference: a StatefulSet + headless Service. vLLM (with the rlrun extension), or the rlrun CPU engine,
which serves the same API (`spec.inference.engine`; unset: vLLM on GPU, the CPU engine when gpusPerReplica
is 0).

A StatefulSet, not a Deployment, so that every replica has a stable DNS name
(`names.inference_replica_host`): the trainer reloads each replica and the orchestrator routes rollouts
only to replicas serving the current policy. Behind one load-balanced name, a reload reached one replica.
"""

from __future__ import annotations

from rlrun import pod_contract
from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render.common import Manifest, container, metadata, pod_template, selector_labels, service

C = names.COMPONENT_INFERENCE
PORTS = [("http", names.INFERENCE_PORT)]
# The runtime image's vLLM virtualenv (Dockerfile: /opt/vllm, apart from rlrun's /opt/rlrun on the PATH).
VLLM_PYTHON = "/opt/vllm/bin/python"


def inference_command(run: RLRun) -> tuple[str, list[str], list[str]]:
    """(image, command, args) of an inference server."""
    inf, model, images = run.spec.inference, run.spec.model, run.spec.images
    if inf.engine_name == "rlrun":
        return images.runtime, ["rlrun-inference"], []
    # The model comes from the runtime config and the port from $RLRUN_PORT (see render.common); what is
    # left are vLLM's own arguments, passed through.
    args = ["--revision", model.revision] if model.revision else []
    args += ["--tensor-parallel-size", str(inf.tensor_parallel_size), *inf.extra_args]
    return images.inference, [VLLM_PYTHON, "-m", "rlrun.runtime.inference.vllm_server"], args


def render_inference(run: RLRun) -> list[Manifest]:
    inf = run.spec.inference
    image, command, args = inference_command(run)
    gpu = inf.gpus_per_replica > 0
    main = container(
        run,
        C,
        image=image,
        command=command,
        args=args,
        ports=PORTS,
        spec_resources=inf.resources,
        gpus=inf.gpus_per_replica,
        extra_env=[{"name": pod_contract.PORT_ENV, "value": str(names.INFERENCE_PORT)}],
        shm=gpu,
    )
    main["readinessProbe"] = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(run, names.SUFFIX_INFERENCE, C),
        "spec": {
            "replicas": 0 if run.spec.suspend else inf.replicas,
            "serviceName": names.child_name(run.metadata.name, names.SUFFIX_INFERENCE),
            "selector": {"matchLabels": selector_labels(run, C)},
            # Replicas start (minutes for vLLM) and are replaced independently, not one after another.
            "podManagementPolicy": "Parallel",
            # Replaces a pod by deleting it first: old and new never hold GPUs at once.
            "updateStrategy": {"type": "RollingUpdate"},
            "template": pod_template(run, C, main, inf.scheduling, shm=gpu),
        },
    }
    return [service(run, names.SUFFIX_INFERENCE, C, PORTS, headless=True), statefulset]
