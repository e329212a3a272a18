"""`rlrun render FILE` prints exactly what the operator applies: after a reconcile, every child read back
from the real API server holds every field render printed (server-set fields aside), and there is no
child render did not print."""

from __future__ import annotations

import json

import pytest
import yaml
from operator_harness import create_run, get, run_doc, running_operator

from rlrun.cli import main
from rlrun.operator import names
from rlrun.operator.drift import difference

pytestmark = pytest.mark.cluster
KINDS = "pvc,configmap,secret,service,deployment,statefulset,job,networkpolicy"


def test_rendered_children_equal_the_applied_ones(crd, namespace, wait_for, tmp_path, capsys):
    kube, doc = crd, run_doc(queueName="gpu-queue")  # the Kueue rule is part of what is compared
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["render", str(path), "-n", namespace, "--progress-url", "http://127.0.0.1:8081"]) == 0
    rendered = list(yaml.safe_load_all(capsys.readouterr().out))
    with running_operator(kube, namespace):  # the harness's progress URL is http://127.0.0.1:8081
        create_run(kube, namespace, doc)
        selector = f"{names.LABEL_INSTANCE}=demo"
        wait_for(lambda: len(get(kube, namespace, KINDS, "-l", selector)["items"]) == len(rendered), 60,
                 "every child")  # fmt: skip
        live = {
            (o["kind"], o["metadata"]["name"]): o
            for o in get(kube, namespace, KINDS, "-l", selector)["items"]
        }
    assert {(o["kind"], o["metadata"]["name"]) for o in rendered} == set(live)
    for want in rendered:
        have = live[(want["kind"], want["metadata"]["name"])]
        if want["kind"] == "Secret":  # a fresh random token each time: compare the key, not the value
            assert set(want.pop("stringData")) == set(have["data"])
        assert [r["uid"] for r in have["metadata"]["ownerReferences"]]  # set by the operator from the uid
        assert difference(want, have) is None, (
            f"{want['kind']} {want['metadata']['name']}: {difference(want, have)} differs:\n"
            f"{json.dumps(want, indent=1)[:3000]}"
        )
