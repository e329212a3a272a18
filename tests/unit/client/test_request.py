"""Submissions before any I/O: names, request ids, spec hashes and the errors a caller sees."""

from pathlib import Path

import pytest
import yaml

from rlrun.client.errors import SpecRejected
from rlrun.client.request import (
    ANNOTATION_REQUEST_ID,
    ANNOTATION_SPEC_HASH,
    LABEL_REQUEST,
    conflict_message,
    load_document,
    name_for_request,
    prepare,
    request_digest,
    same_request,
)
from rlrun.operator import names
from rlrun.operator.api import RLRun, RLRunSpec

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "color-codeword.yaml"


def test_every_source_form_gives_the_same_submission():
    doc = yaml.safe_load(EXAMPLE.read_text())
    forms = [EXAMPLE, str(EXAMPLE), doc, RLRun.model_validate(doc)]
    subs = [prepare(f, name=None, request_id="req-1", namespace="team") for f in forms]
    assert len({(s.name, s.spec_hash) for s in subs}) == 1
    bare = prepare(doc["spec"], name=subs[0].name, request_id="req-1", namespace="team")
    model = prepare(
        RLRunSpec.model_validate(doc["spec"]), name=subs[0].name, request_id="req-1", namespace="team"
    )
    assert bare.spec_hash == model.spec_hash == subs[0].spec_hash


def test_name_rules():
    doc = yaml.safe_load(EXAMPLE.read_text())
    base = doc["metadata"]["name"]
    # without a request id: the document's name, as kubectl would
    assert prepare(doc, name=None, request_id=None, namespace=None).name == base
    # with one: one template serves many requests, each its own deterministic name
    a = prepare(doc, name=None, request_id="a", namespace=None).name
    assert (
        a
        == f"{base}-{request_digest('a')[:8]}"
        == prepare(doc, name=None, request_id="a", namespace=None).name
    )
    assert a != prepare(doc, name=None, request_id="b", namespace=None).name
    assert prepare(doc, name="mine", request_id="a", namespace=None).name == "mine"
    # a long base is cut so the name still fits every child name
    long = name_for_request("x" * 80, "a")
    assert len(long) <= names.MAX_RUN_NAME_LENGTH and long.endswith(request_digest("a")[:8])
    assert prepare(
        {"orchestrator": {"maxSteps": 3}}, name=None, request_id="a", namespace=None
    ).name.startswith("run-")


def test_body_carries_the_request_and_the_spec_as_written():
    doc = {"metadata": {"name": "demo", "labels": {"team": "a"}}, "spec": {"orchestrator": {"maxSteps": 3}}}
    sub = prepare(doc, name=None, request_id="req/42", namespace="ns")
    meta = sub.body["metadata"]
    assert sub.body["spec"] == {"orchestrator": {"maxSteps": 3}}  # the server fills the defaults
    assert meta["namespace"] == "ns" and meta["labels"]["team"] == "a"
    assert meta["labels"][LABEL_REQUEST] == request_digest("req/42")
    assert meta["annotations"] == {ANNOTATION_REQUEST_ID: "req/42", ANNOTATION_SPEC_HASH: sub.spec_hash}


def test_spec_hash_ignores_spelled_out_defaults_and_sees_changes():
    plain = prepare({"orchestrator": {"maxSteps": 3}}, name="r", request_id="x", namespace=None)
    spelled = prepare(
        {"orchestrator": {"maxSteps": 3, "groupSize": 8}}, name="r", request_id="x", namespace=None
    )
    changed = prepare({"orchestrator": {"maxSteps": 4}}, name="r", request_id="x", namespace=None)
    assert plain.spec_hash == spelled.spec_hash != changed.spec_hash


def test_same_request_and_conflict_messages():
    sub = prepare({"orchestrator": {"maxSteps": 3}}, name="r", request_id="x", namespace=None)
    assert same_request(sub.run, sub) is True
    other_spec = prepare({"orchestrator": {"maxSteps": 4}}, name="r", request_id="x", namespace=None)
    assert same_request(sub.run, other_spec) is False
    assert "different spec" in conflict_message(sub.run, other_spec)
    other_request = prepare({"orchestrator": {"maxSteps": 3}}, name="r", request_id="y", namespace=None)
    assert same_request(sub.run, other_request) is None
    assert "already exists (created by request id 'x')" in conflict_message(sub.run, other_request)


@pytest.mark.parametrize(
    ("source", "kwargs", "expect"),
    [
        (
            {"orchestrator": {"batchSize": 30, "groupSize": 8}},
            {},
            "spec.orchestrator: orchestrator.batchSize (30)",
        ),
        ({"trainer": {"nodes": 0}}, {}, "spec.trainer.nodes: Input should be greater than or equal to 1"),
        ({"trainer": {"nodez": 2}}, {}, "spec.trainer.nodez: Extra inputs are not permitted"),
        ({}, {"name": "Bad_Name"}, "metadata.name: metadata.name must be a DNS-1035 label"),
        ({}, {"request_id": "has space"}, "request id 'has space' is not valid"),
        ({"apiVersion": "v1", "kind": "Pod", "spec": {}}, {}, "not an RLRun document"),
    ],
)
def test_invalid_input_is_rejected_by_field(source, kwargs, expect):
    kw = {"name": "ok", "request_id": "r", "namespace": None, **kwargs}
    with pytest.raises(SpecRejected) as err:
        prepare(source, **kw)
    assert expect in str(err.value)


def test_file_errors_are_spec_rejections(tmp_path):
    with pytest.raises(SpecRejected, match="cannot read"):
        load_document(tmp_path / "missing.yaml")
    two = tmp_path / "two.yaml"
    two.write_text("spec: {}\n---\nspec: {}\n")
    with pytest.raises(SpecRejected, match="expected exactly one RLRun document"):
        load_document(two)
