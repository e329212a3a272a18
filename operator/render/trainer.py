"""The trainer: an Indexed Job (pod i = torchrun node rank i) + its headless Service.

Pod hostnames are `<run>-trainer-<i>` and the pods share the subdomain `<run>-trainer`, so rank 0 is
reachable as `<run>-trainer-0.<run>-trainer` before any pod is Ready; that name is MASTER_ADDR. A lost
rank cannot rejoin a collective, so the Job never retries (backoffLimit 0): the operator replaces the
whole group with a new attempt (label rlrun.dev/trainer-attempt) from the last checkpoint.
"""

from __future__ import annotations

from rlrun import pod_contract
from rlrun.operator import names
from rlrun.operator.api import RLRun
from rlrun.operator.render.common import (
    Manifest,
    attempt_env,
    container,
    job_labels,
    job_suspend,
    metadata,
    pod_template,
    run_name,
    service,
)
from rlrun.runtime.config import torchrun_shutdown_seconds

C = names.COMPONENT_TRAINER


def trainer_ports(run: RLRun) -> list[tuple[str, int]]:
    base = run.spec.transport.base_port
    return [("rendezvous", names.TRAINER_MASTER_PORT), ("zmq-data", base + 1), ("zmq-ready", base + 2)]


TORCHRUN_ARGS = [
    "--nnodes=$(NNODES)",
    "--nproc-per-node=$(NPROC_PER_NODE)",
    "--node-rank=$(NODE_RANK)",
    "--master-addr=$(MASTER_ADDR)",
    "--master-port=$(MASTER_PORT)",
    "--max-restarts=0",
    "-m",
    "rlrun.runtime.trainer",
]
"""torchrun wiring; $(VAR) is expanded by the kubelet from the container's env. `-m` names the package:
its `__main__` runs the trainer (`rlrun.runtime.trainer.main` only defines `main`)."""


def render_trainer(run: RLRun, *, attempt: int = 0) -> list[Manifest]:
    tr = run.spec.trainer
    svc_name = names.child_name(run_name(run), names.SUFFIX_TRAINER)
    wiring = [
        {"name": pod_contract.MASTER_ADDR_ENV, "value": names.trainer_master_addr(run_name(run))},
        {"name": pod_contract.MASTER_PORT_ENV, "value": str(names.TRAINER_MASTER_PORT)},
        {"name": pod_contract.NNODES_ENV, "value": str(tr.nodes)},
        {"name": pod_contract.NPROC_PER_NODE_ENV, "value": str(tr.ranks_per_node)},
        {
            "name": pod_contract.NODE_RANK_ENV,
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{names.ANNOTATION_COMPLETION_INDEX}']"}
            },
        },
        attempt_env(attempt),
        {
            "name": pod_contract.TORCHRUN_SHUTDOWN_ENV,
            "value": str(torchrun_shutdown_seconds(tr.termination_grace_period_seconds)),
        },
    ]
    main = container(
        run,
        C,
        image=run.spec.images.runtime,
        command=["torchrun"],
        args=TORCHRUN_ARGS,
        ports=trainer_ports(run),
        spec_resources=tr.resources,
        gpus=tr.gpus_per_node,
        extra_env=wiring,
        shm=True,
    )
    attempt_label = {names.LABEL_TRAINER_ATTEMPT: str(attempt)}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(run, names.SUFFIX_TRAINER, C, {**attempt_label, **job_labels(run, C)}),
        "spec": {
            "suspend": job_suspend(run, C),
            "completionMode": "Indexed",
            "completions": tr.nodes,
            "parallelism": tr.nodes,
            "backoffLimit": 0,
            # A replacement pod must never start while its predecessor still holds the rendezvous port.
            "podReplacementPolicy": "Failed",
            "template": pod_template(
                run,
                C,
                main,
                tr.scheduling,
                restart_policy="Never",
                labels=attempt_label,
                shm=True,
                # SIGTERM (suspend, eviction, drain) -> the ranks checkpoint within this window.
                extra_spec={
                    "subdomain": svc_name,
                    "terminationGracePeriodSeconds": tr.termination_grace_period_seconds,
                },
            ),
        },
    }
    return [service(run, names.SUFFIX_TRAINER, C, trainer_ports(run), headless=True), job]
