"""A submission, before any I/O: the RLRun document from a file, dict or model, its name, its request id,
and the hash that tells "the same request again" from "the same request id with another spec".

Idempotency rests on the API server's one atomic guarantee: object names are unique. The run's name is a
pure function of the request (the given name, else the document's, else derived from the request id), so
every retry and every concurrent copy of one request targets the same name; one create wins, the others get
AlreadyExists and compare the stored request id and spec hash with their own.

Naming: an explicit `name` wins; with a request id the name is `<document name>-<8 hex of the request id>`
(so one template file serves many requests); without one, the document's name as written (kubectl's rule).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rlrun.client.errors import SpecRejected
from rlrun.operator import names
from rlrun.operator.api import RLRun, RLRunSpec, check_run_name

ANNOTATION_REQUEST_ID = f"{names.GROUP}/request-id"
"""The caller's request id, verbatim."""
ANNOTATION_SPEC_HASH = f"{names.GROUP}/spec-hash"
"""sha256 of the validated spec (defaults filled in), see `spec_hash`."""
LABEL_REQUEST = f"{names.GROUP}/request"
"""A label-safe digest of the request id, so `list(selector=...)` finds a request's run."""

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,252}$")
DEFAULT_NAME_BASE = "run"

Source = str | Path | Mapping[str, Any] | RLRun | RLRunSpec
"""What `submit` accepts: a YAML file path, an RLRun document or bare spec as a dict, or the models."""


@dataclass(frozen=True)
class Submission:
    """One validated request: `body` is what is sent to the API server."""

    name: str
    request_id: str
    spec_hash: str
    run: RLRun
    body: dict[str, Any]


def new_request_id() -> str:
    """A fresh id for a caller that gave none (such a submit is not retry-safe: pass your own)."""
    return uuid.uuid4().hex


def check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise SpecRejected(
            f"request id {request_id!r} is not valid",
            [
                (
                    "",
                    "use 1-253 characters: letters, digits and . _ : / @ + = - (starting with a letter or digit)",
                )
            ],
        )
    return request_id


def request_digest(request_id: str) -> str:
    return hashlib.sha256(request_id.encode()).hexdigest()[:20]


def name_for_request(base: str | None, request_id: str) -> str:
    """`<base>-<8 hex>`: deterministic, so a retry targets the same object; `base` is cut to fit."""
    suffix = f"-{request_digest(request_id)[:8]}"
    base = (base or DEFAULT_NAME_BASE)[: names.MAX_RUN_NAME_LENGTH - len(suffix)].rstrip("-")
    return f"{base}{suffix}"


def spec_hash(spec: RLRunSpec) -> str:
    """Hash of the spec with every default filled in: spelling a default out does not change it."""
    canonical = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def field_errors(error: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """(field path, message) per pydantic error, paths in the document's camelCase spelling."""
    out = []
    for e in error.errors():
        path = prefix
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        out.append((path, e["msg"].removeprefix("Value error, ")))
    return out


def load_document(source: Source) -> dict[str, Any]:
    """The RLRun document (camelCase dict) of any accepted source. A dict without `spec` is a bare spec."""
    if isinstance(source, RLRun):
        return source.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"status"})
    if isinstance(source, RLRunSpec):
        return {"spec": source.model_dump(mode="json", by_alias=True, exclude_unset=True)}
    if isinstance(source, Mapping):
        doc = dict(source)
        return doc if {"spec", "metadata", "apiVersion", "kind"} & doc.keys() else {"spec": doc}
    path = Path(source)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as e:
        raise SpecRejected(f"cannot read {path}", [("", e.strerror or str(e))]) from e
    except yaml.YAMLError as e:
        raise SpecRejected(f"{path} is not YAML", [("", str(e))]) from e
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SpecRejected(f"{path}: expected exactly one RLRun document", [("", f"found {len(docs)}")])
    return docs[0]


def prepare(source: Source, *, name: str | None, request_id: str | None, namespace: str | None) -> Submission:
    """Validate `source` like the API server would (the CRD's CEL rules are mirrored by the models) and
    build the create body: the spec as written (the server fills defaults), request annotations added."""
    doc = load_document(source)
    meta = dict(doc.get("metadata") or {})
    if request_id is not None:
        check_request_id(request_id)
        name = name or name_for_request(meta.get("name"), request_id)
    else:
        request_id = new_request_id()
        name = name or meta.get("name") or name_for_request(None, request_id)
    try:
        check_run_name(name)
    except ValueError as e:
        raise SpecRejected(f"run name {name!r} is not valid", [("metadata.name", str(e))]) from e
    if (
        doc.get("apiVersion", names.API_VERSION) != names.API_VERSION
        or doc.get("kind", names.KIND) != names.KIND
    ):
        raise SpecRejected(
            "not an RLRun document",
            [("", f"expected apiVersion {names.API_VERSION} and kind {names.KIND}, got "
                  f"{doc.get('apiVersion')} / {doc.get('kind')}")],
        )  # fmt: skip
    labels = {**(meta.get("labels") or {}), LABEL_REQUEST: request_digest(request_id)}
    annotations = dict(meta.get("annotations") or {})
    spec = doc.get("spec") or {}
    try:
        run = RLRun.model_validate(
            {"metadata": {"name": name, "namespace": namespace, "labels": labels}, "spec": spec}
        )
    except ValidationError as e:
        raise SpecRejected(f"rlrun {name!r}: the spec is invalid", field_errors(e)) from e
    digest = spec_hash(run.spec)
    annotations |= {ANNOTATION_REQUEST_ID: request_id, ANNOTATION_SPEC_HASH: digest}
    metadata: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
    if namespace:
        metadata["namespace"] = namespace
    body = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": metadata, "spec": spec}
    run.metadata.annotations = annotations
    return Submission(name=name, request_id=request_id, spec_hash=digest, run=run, body=body)


def same_request(existing: RLRun, submission: Submission) -> bool | None:
    """True: `existing` is this request's run. False: this request id made it with another spec.
    None: `existing` belongs to another request (or was made without the client)."""
    annotations = existing.metadata.annotations
    if annotations.get(ANNOTATION_REQUEST_ID) != submission.request_id:
        return None
    return annotations.get(ANNOTATION_SPEC_HASH) == submission.spec_hash


def conflict_message(existing: RLRun, submission: Submission) -> str:
    """Why `existing` blocks `submission` (same_request(...) is not True), and what to do."""
    name = existing.metadata.name
    other = existing.metadata.annotations.get(ANNOTATION_REQUEST_ID)
    if other == submission.request_id:
        return (
            f"request id {submission.request_id!r} already created rlrun {name!r} with a different spec "
            f"(spec hash {existing.metadata.annotations.get(ANNOTATION_SPEC_HASH)} != {submission.spec_hash}): "
            "a request id stands for one spec; use a new request id to submit a changed spec"
        )
    made_by = f"by request id {other!r}" if other else "without a request id"
    return (
        f"an rlrun named {name!r} already exists (created {made_by}): choose another name, or pass the "
        "request id that created it"
    )
