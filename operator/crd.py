"""Generate the RLRun CustomResourceDefinition from the pydantic models in `api/` (spec and status).

pydantic emits JSON Schema 2020-12; the API server wants a *structural* OpenAPI v3 schema. The
transform inlines `$defs`, drops titles and `additionalProperties: false` (pruning plus strict field
validation already reject unknown fields), turns `anyOf: [X, null]` into X + `nullable: true`, maps
free-form objects to `x-kubernetes-preserve-unknown-fields`, `int | str` to `x-kubernetes-int-or-string`,
and JSON-Schema-2020 exclusive bounds to OpenAPI's boolean form. Descriptions, defaults, enums, bounds
and the CEL rules (`x-kubernetes-validations`, carried by `json_schema_extra`) pass through.

The generated YAML is committed in two places (manifests/crd and the Helm chart's crds/); the examples
are copied from examples/ to manifests/examples. `generated_files()` is the one description of all of
them: `rlrun crd --write` writes it and a unit test fails when the committed files drift from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from rlrun.operator import names
from rlrun.operator.api import ROOT_VALIDATIONS, RLRunSpec, RLRunStatus

CRD_FILE = f"{names.GROUP}_{names.PLURAL}.yaml"
CRD_PATHS = (Path("manifests/crd") / CRD_FILE, Path("helm/rlrun/crds") / CRD_FILE)
EXAMPLES_DIR = Path("examples")
EXAMPLES_COPY_DIR = Path("manifests/examples")

_DROP = {"title", "$defs"}


class SchemaError(ValueError):
    """The models produced a schema the API server would reject as non-structural."""


def _resolve(node: Any, defs: dict[str, Any], path: str) -> Any:
    """Inline $refs and normalise one schema node (recursively) into structural OpenAPI v3."""
    if isinstance(node, list):
        return [_resolve(item, defs, path) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"].removeprefix("#/$defs/")
        merged = {**defs[ref], **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs, path)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v != {"type": "null"}]
        nullable = len(variants) < len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if nullable and rest.get("default", 0) is None:
            del rest["default"]
        if len(variants) == 1:
            out = _resolve({**variants[0], **rest}, defs, path)
        elif sorted(v.get("type", "") for v in variants) == ["integer", "string"]:
            # A string branch's pattern (a quantity's) stays: JSON Schema applies it to strings only.
            string = next(v for v in variants if v.get("type") == "string")
            checks = {k: string[k] for k in ("pattern", "maxLength") if k in string}
            out = _resolve({**rest, **checks, "x-kubernetes-int-or-string": True}, defs, path)
        else:
            raise SchemaError(
                f"{path}: union {node['anyOf']} has no structural form; use X | None or int | str"
            )
        if nullable:
            out["nullable"] = True
        return out

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: _resolve(v, defs, f"{path}.{k}") for k, v in value.items()}
        elif key == "additionalProperties":
            if value is False:
                continue
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out[key] = _resolve(value, defs, f"{path}.*")
        elif key == "items":
            out[key] = _resolve(value, defs, f"{path}[]")
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" in out:
        # Nested defaults only apply when the parent object exists: default every optional sub-object
        # to its own fully defaulted value, so a sparse spec is defaulted by the API server as pydantic
        # does (a bare {} would also fail the sub-object's CEL rules when the CRD is validated).
        required = set(out.get("required", ()))
        for key, prop in out["properties"].items():
            sub_object = prop.get("type") == "object" and "properties" in prop
            if key not in required and sub_object and not prop.get("nullable") and "default" not in prop:
                prop["default"] = _defaults_of(prop)
    if not out.get("type") and not out.get("x-kubernetes-int-or-string") and "enum" not in out:
        # `Any`: a free-form value. Structural schemas allow an untyped node only with this marker.
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _defaults_of(node: dict[str, Any]) -> dict[str, Any]:
    """The value the API server's defaulting gives `{}` under object schema `node` (already resolved)."""
    return {k: p["default"] for k, p in node["properties"].items() if "default" in p}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `model` (camelCase aliases, $defs inlined)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _resolve(raw, raw.get("$defs", {}), model.__name__)


def crd_manifest() -> dict[str, Any]:
    """The RLRun CustomResourceDefinition as a dict (deterministic: same models, same dict)."""
    spec = structural_schema(RLRunSpec)
    status = structural_schema(RLRunStatus)
    status["description"] = (status.get("description", "") + " Written by the operator.").strip()
    root = {
        "type": "object",
        "description": "RLRun is one reinforcement-learning post-training run; the operator creates "
        "every workload of it from spec and reports progress in status.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": ROOT_VALIDATIONS,
    }
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step"},
        {"name": "Reward", "type": "number", "jsonPath": ".status.progress.rewardMean"},
        {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.CRD_NAME,
            "labels": {names.LABEL_NAME: names.APP_NAME, names.LABEL_PART_OF: names.APP_NAME},
        },
        "spec": {
            "group": names.GROUP,
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": list(names.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Shared sub-schemas (one model used in several places) must not become YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    """Multi-line strings (the runtime config JSON) as literal blocks, readable in `rlrun render`."""
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_NoAliasDumper.add_representer(str, _str)


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_NoAliasDumper, sort_keys=False, width=110, allow_unicode=True)


def dump_yaml_stream(objs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objs, Dumper=_NoAliasDumper, sort_keys=False, width=110, allow_unicode=True)


def crd_yaml() -> str:
    header = "# Generated by `rlrun crd --write` from rlrun/operator/api/. Do not edit.\n"
    return header + dump_yaml(crd_manifest())


def generated_files(root: Path) -> dict[Path, str]:
    """Every generated file of the repo at `root` (path relative to root -> content)."""
    files = {path: crd_yaml() for path in CRD_PATHS}
    for example in sorted((root / EXAMPLES_DIR).glob("*.yaml")):
        files[EXAMPLES_COPY_DIR / example.name] = example.read_text()
    return files


def write_generated(root: Path) -> list[Path]:
    """Write generated files atomically (temp + rename); return those whose content changed."""
    changed = []
    for rel, content in generated_files(root).items():
        path = root / rel
        if path.exists() and path.read_text() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(content)
        os.replace(tmp, path)
        changed.append(rel)
    return changed
