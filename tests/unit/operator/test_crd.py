"""The committed CRD is what the models generate, and it is a structural schema the API server accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rlrun.operator import names
from rlrun.operator.api import QUANTITY_PATTERN, RLRunSpec
from rlrun.operator.crd import CRD_PATHS, crd_manifest, generated_files, structural_schema

REPO = Path(__file__).resolve().parents[3]
FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const"}


def test_committed_files_match_the_models():
    stale = [
        str(rel) for rel, content in generated_files(REPO).items() if not (REPO / rel).is_file()
        or (REPO / rel).read_text() != content
    ]  # fmt: skip
    assert not stale, f"run `rlrun crd --write` and commit: {stale}"
    assert len(CRD_PATHS) == 2 and {str(p) for p in CRD_PATHS} <= {str(p) for p in generated_files(REPO)}


def _walk(node: Any, path: str = "$"):
    if isinstance(node, dict):
        yield path, node
        for key in ("properties",):
            for k, v in node.get(key, {}).items():
                yield from _walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}.*")


def test_schema_is_structural():
    root = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        assert not FORBIDDEN & set(node), f"{path}: {FORBIDDEN & set(node)}"
        typed = node.get("type") or node.get("x-kubernetes-int-or-string")
        assert typed or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("additionalProperties") is False:
            raise AssertionError(f"{path}: additionalProperties false is not structural")
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound) in (None, True), f"{path}.{bound} must be the OpenAPI v3 boolean"


def test_cel_rules_and_descriptions_survive():
    spec = structural_schema(RLRunSpec)
    props = spec["properties"]
    assert "tensorParallelSize" in props["inference"]["x-kubernetes-validations"][0]["rule"]
    assert (
        props["orchestrator"]["x-kubernetes-validations"][0]["rule"] == "self.batchSize % self.groupSize == 0"
    )
    assert props["trainer"]["properties"]["nodes"]["minimum"] == 1
    assert props["envWorkers"]["properties"]["workersPerReplica"]["maximum"] == 64
    assert props["images"]["properties"]["pullPolicy"]["enum"] == ["Always", "IfNotPresent", "Never"]
    assert "featureTTLSeconds" not in props["multimodal"]["properties"]  # removed: nothing swept features
    assert props["inference"]["properties"]["engine"]["enum"] == ["vllm", "rlrun"]
    assert props["trainer"]["properties"]["clipEpsilon"]["exclusiveMinimum"] is True
    assert props["inference"]["properties"]["resources"]["properties"]["limits"]["additionalProperties"] == {
        "x-kubernetes-int-or-string": True,
        "pattern": QUANTITY_PATTERN,
        "maxLength": 32,
    }
    assert props["envWorkers"]["properties"]["environment"]["properties"]["args"][
        "x-kubernetes-preserve-unknown-fields"
    ]
    assert props["trainer"]["properties"]["processesPerNode"]["nullable"] is True
    assert props["trainer"]["description"]


def _apply_defaults(node: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """What the API server's structural defaulting does to `value` (top-down, recursively)."""
    out = dict(value)
    for key, prop in node.get("properties", {}).items():
        if key not in out and "default" in prop:
            out[key] = prop["default"]
        if isinstance(out.get(key), dict) and "properties" in prop:
            out[key] = _apply_defaults(prop, out[key])
    return out


def test_server_defaulting_of_an_empty_spec_equals_pydantic_defaults():
    spec = structural_schema(RLRunSpec)
    defaulted = _apply_defaults(spec, {})
    assert RLRunSpec.model_validate(defaulted) == RLRunSpec()
    # Every leaf with a pydantic default is filled by the server, not left for pydantic to fill.
    assert defaulted["trainer"]["checkpointInterval"] == 10
    assert defaulted["failurePolicy"] == {"maxRestarts": 3, "backoffSeconds": 10, "backoffMaxSeconds": 300}
    assert defaulted["multimodal"]["deferMaterialization"] is True
    assert defaulted["multimodal"]["materializeConcurrency"] == 4
    assert defaulted["sampleUpload"]["enabled"] is False


def test_names_columns_and_subresources():
    crd = crd_manifest()
    assert crd["metadata"]["name"] == "rlruns.rlrun.dev"
    spec = crd["spec"]
    assert spec["names"]["shortNames"] == ["rlr"] and spec["names"]["kind"] == "RLRun"
    assert spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["name"] == names.VERSION and version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"]]
    assert cols == ["Phase", "Step", "Reward", "Restarts", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed", "Suspended"]
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert status["progress"]["properties"]["rewardMean"]["type"] == "number"


def test_generated_yaml_has_no_anchors():
    text = (REPO / CRD_PATHS[0]).read_text()
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == crd_manifest()
