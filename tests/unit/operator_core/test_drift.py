"""Drift: a hand-edited child is found (by owner reference when its labels are gone) and re-applied or
relabelled, with an Event naming the field; server defaults and canonical quantities are not drift."""

from operator_builders import T0, body, find, observed, rendered
from operator_builders import settings as settings_of

from rlrun.operator.drift import difference
from rlrun.operator.observe import observe
from rlrun.operator.reconcile import plan
from rlrun.operator.status import RunStatus


def test_server_defaults_and_canonical_quantities_are_not_drift():
    want = {
        "spec": {"containers": [{"image": "a", "resources": {"limits": {"cpu": "0.5", "memory": "1Gi"}}}]}
    }
    have = {"spec": {"containers": [{"image": "a", "terminationMessagePath": "/dev/termination-log",
                                     "resources": {"limits": {"cpu": "500m", "memory": "1024Mi"}}}]},
            "status": {}}  # fmt: skip
    assert difference(want, have) is None
    have["spec"]["containers"][0]["image"] = "evil"
    assert difference(want, have) == ".spec.containers[0].image"


def pass_over(objs):
    data = body()
    stored = RunStatus(phase="Running", observed_generation=1, start_time=T0)
    return plan(settings_of(data), rendered(data), observe(objs), stored, None, T0)


def test_a_hand_edited_image_and_configmap_are_reapplied_with_an_event():
    objs = observed(rendered(body())(0))
    find(objs, "StatefulSet", "inference")["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    find(objs, "ConfigMap", "config")["data"]["config.json"] = "{}"
    p = pass_over(objs)
    assert sorted(o["kind"] for o in p.apply) == ["ConfigMap", "StatefulSet"]
    drift = [e.message for e in p.events if e.reason == "DriftReverted"]
    assert any("spec.template.spec.containers[0].image" in m for m in drift) and len(drift) == 2
    assert pass_over(observed(rendered(body())(0))).apply == []  # no drift, no writes


def test_a_job_whose_instance_label_was_removed_is_relabelled():
    objs = observed(rendered(body())(0))
    del find(objs, "Job", "trainer")["metadata"]["labels"]["app.kubernetes.io/instance"]
    p = pass_over(objs)
    ((name, labels),) = p.relabel
    assert name == "color-codeword-trainer" and labels["app.kubernetes.io/instance"] == "color-codeword"
    assert [e.reason for e in p.events if e.reason == "DriftReverted"] == ["DriftReverted"]
