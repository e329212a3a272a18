"""Hand-edited children on the `cluster` fixture: drift is re-applied and reported; a trainer Job whose
instance label was removed is still found (by owner reference), relabelled, and its failure restarts it."""

from __future__ import annotations

import json

import pytest
from operator_harness import create_run, events, get, pods, run_doc, run_status, running_operator

from rlrun.operator import names

pytestmark = pytest.mark.cluster
FAST = {"failurePolicy": {"maxRestarts": 2, "backoffSeconds": 1, "backoffMaxSeconds": 1}}


def patch(kube, ns, what, body):
    kube.kubectl("patch", *what, "-n", ns, "--type=merge", "-p", json.dumps(body))


def test_hand_edits_are_reverted_and_an_unlabelled_trainer_still_restarts(
    crd, namespace, wait_for, set_pod_phase
):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc(**FAST))
        wait_for(lambda: run_status(kube, namespace).get("phase") == "Running", 90, "Running")
        image = get(kube, namespace, "deploy", "demo-envs")["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
        patch(kube, namespace, ("deploy", "demo-envs"), {"spec": {"template": {"spec": {"containers": [
            {"name": "env-workers", "image": "evil:1"}]}}}})  # fmt: skip
        patch(kube, namespace, ("cm", "demo-config"), {"data": {"config.json": "{}"}})

        def envs_image():
            return get(kube, namespace, "deploy", "demo-envs")["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]

        wait_for(lambda: envs_image() == image, 30, "image re-applied")
        wait_for(
            lambda: get(kube, namespace, "cm", "demo-config")["data"]["config.json"] != "{}", 30, "config"
        )
        assert events(kube, namespace).count("DriftReverted") >= 2
        kube.kubectl("label", "job", "demo-trainer", "-n", namespace, f"{names.LABEL_INSTANCE}-")
        wait_for(
            lambda: names.LABEL_INSTANCE in get(kube, namespace, "job", "demo-trainer")["metadata"]["labels"],
            30,
            "trainer Job relabelled",
        )
        kube.kubectl("label", "job", "demo-trainer", "-n", namespace, f"{names.LABEL_INSTANCE}-")
        trainer = next(p for p in pods(kube, namespace, "trainer") if p["status"].get("phase") == "Running")
        set_pod_phase(namespace, trainer["metadata"]["name"], "Failed")
        wait_for(
            lambda: run_status(kube, namespace).get("restarts") == 1, 60, "the failure restarts the group"
        )
