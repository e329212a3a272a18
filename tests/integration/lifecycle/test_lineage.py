"""Fork lineage on the control-plane tier: a fork (spec.resumeFrom) names its parent in status, shares
the parent's volume, and keeps it alive (garbage collection) after the parent RLRun is deleted; an unfit
parent fails the fork at once with a precise message."""

import json

import pytest
from operator_harness import create_run, events, get, run_doc, run_status, running_operator

pytestmark = pytest.mark.cluster


def _owner_uids(obj):
    return {o["uid"] for o in obj["metadata"].get("ownerReferences") or []}


def _create(kube, namespace, doc):
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def test_a_fork_names_its_parent_shares_and_protects_its_volume(crd, namespace, wait_for):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc())
        wait_for(lambda: run_status(kube, namespace).get("phase") == "Running", 60, "parent Running")
        _create(kube, namespace, run_doc("fork", resumeFrom={"run": "demo", "step": 10}))
        st = wait_for(lambda: run_status(kube, namespace, "fork").get("resumedFrom") and
                      run_status(kube, namespace, "fork"), 30, "fork status names its parent")  # fmt: skip
        assert st["resumedFrom"] == {"run": "demo", "step": 10}
        assert "Forked" in events(kube, namespace)
        fork_uid = get(kube, namespace, "rlrun", "fork")["metadata"]["uid"]
        trainer = wait_for(lambda: get(kube, namespace, "job", "fork-trainer"), 30, "fork trainer Job")
        claims = {v["persistentVolumeClaim"]["claimName"] for v in trainer["spec"]["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}  # fmt: skip
        assert claims == {"demo-assets"}  # shared, not copied
        assert get(kube, namespace, "pvc", "fork-assets") is None
        wait_for(
            lambda: fork_uid in _owner_uids(get(kube, namespace, "pvc", "demo-assets")), 30, "fork owns it"
        )

        kube.kubectl("delete", "rlrun", "demo", "-n", namespace, "--wait=true")
        # the garbage collector removes the parent's children, but not the volume a fork still reads
        wait_for(lambda: get(kube, namespace, "job", "demo-trainer") is None, 60, "parent's Job collected")
        pvc = get(kube, namespace, "pvc", "demo-assets")
        assert pvc is not None and _owner_uids(pvc) == {fork_uid}
        assert run_status(kube, namespace, "fork")["phase"] != "Failed"  # admitted once: stays admitted

        kube.kubectl("delete", "rlrun", "fork", "-n", namespace, "--wait=true")
        wait_for(lambda: get(kube, namespace, "pvc", "demo-assets") is None, 60, "last owner gone: collected")


@pytest.mark.parametrize(
    ("fork_spec", "message"),
    [
        ({"resumeFrom": {"run": "nobody", "step": 3}},
         "spec.resumeFrom.run: RLRun 'nobody' not found in namespace"),
        ({"resumeFrom": {"run": "demo", "step": 3}, "model": {"name": "Qwen/Qwen2-VL-2B-Instruct"}},
         "spec.resumeFrom: model 'Qwen/Qwen2-VL-2B-Instruct' differs from run 'demo''s 'builtin:tiny-qwen2-vl'"),
        ({"resumeFrom": {"run": "demo", "step": 3}, "storage": {"existingClaim": "elsewhere"}},
         "a fork reads run 'demo''s checkpoint from its volume 'demo-assets'"),
    ],
)  # fmt: skip
def test_an_unfit_parent_fails_the_fork_at_once_saying_why(crd, namespace, wait_for, fork_spec, message):
    kube = crd
    with running_operator(kube, namespace):
        create_run(kube, namespace, run_doc())
        _create(kube, namespace, run_doc("fork", **fork_spec))
        st = wait_for(lambda: run_status(kube, namespace, "fork").get("phase") == "Failed" and
                      run_status(kube, namespace, "fork"), 30, "fork Failed")  # fmt: skip
        assert st["reason"] == "ResumeSourceInvalid" and message in st["message"], st
        assert get(kube, namespace, "job", "fork-trainer") is None  # nothing started
