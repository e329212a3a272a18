"""The RLRun API (`rlrun.dev/v1alpha1`): pydantic models, the single source of the CRD.

Split by concern: `spec` (what users write), `status` (what the operator writes), `messages` (every
admission message, shared by CEL and pydantic). This module holds the object itself (metadata rules,
strict validation) and re-exports the public names, so `rlrun.operator.api.X` keeps working.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlrun.operator import names
from rlrun.operator.api.messages import (
    MSG_BACKOFF,
    MSG_ENGINE_GPU,
    MSG_ENV_RESERVED,
    MSG_GPU_IN_RESOURCES,
    MSG_LABELS_RESERVED,
    MSG_MICRO_BATCH,
    MSG_MODEL_IMMUTABLE,
    MSG_NAME_FORM,
    MSG_NAME_LENGTH,
    MSG_PACKAGES_CREDS,
    MSG_PROCS,
    MSG_RESUME_FROM_IMMUTABLE,
    MSG_STORAGE_EXCLUSIVE,
    MSG_TP,
    MSG_TRAINER_SHAPE_IMMUTABLE,
    MSG_UPLOAD_BOTH,
    MSG_UPLOAD_CREDS,
)
from rlrun.operator.api.spec import (
    QUANTITY_PATTERN,
    Budget,
    EnvironmentSpec,
    EnvVar,
    EnvWorkersSpec,
    FailurePolicy,
    ImagesSpec,
    InferenceSpec,
    ModelSpec,
    OrchestratorSpec,
    PodScheduling,
    Quantity,
    ResourceRequirements,
    RLRunSpec,
    S,
    SampleUploadSpec,
    StorageSpec,
    TrainerSpec,
    cel,
    to_runtime_config,
    validations,
)
from rlrun.operator.api.status import (
    CONDITION_TYPES,
    ComponentCount,
    ComponentsStatus,
    Condition,
    Phase,
    ProgressStatus,
    RLRunStatus,
    StatusSection,
)

_started = "has(oldSelf.status) && has(oldSelf.status.startTime)"
ROOT_VALIDATIONS = [
    cel(
        f"size(self.metadata.name) <= {names.MAX_RUN_NAME_LENGTH}",
        MSG_NAME_LENGTH,
    ),
    cel(f"self.metadata.name.matches('{names.RUN_NAME_PATTERN}')", MSG_NAME_FORM),
    cel(
        f"!({_started}) || self.spec.model == oldSelf.spec.model",
        MSG_MODEL_IMMUTABLE,
        field_path=".spec.model",
    ),
    cel(
        f"!({_started}) || (self.spec.trainer.nodes == oldSelf.spec.trainer.nodes && "
        "self.spec.trainer.gpusPerNode == oldSelf.spec.trainer.gpusPerNode && "
        "self.spec.trainer.?processesPerNode == oldSelf.spec.trainer.?processesPerNode)",
        MSG_TRAINER_SHAPE_IMMUTABLE,
        field_path=".spec.trainer",
    ),
    # Adding or removing it (changing it is refused on the field itself, a cheaper rule for CEL's budget).
    cel(
        "has(self.spec.resumeFrom) == has(oldSelf.spec.resumeFrom)",
        MSG_RESUME_FROM_IMMUTABLE,
        field_path=".spec.resumeFrom",
    ),
]
"""Rules on the whole object (metadata.name, and transitions that need status); the CRD generator puts
them at the root of the schema, where `self.metadata.name` and `oldSelf.status` are visible."""


def check_run_name(name: str) -> str:
    """Raise ValueError with the CRD's message when `name` cannot name a run."""
    if len(name) > names.MAX_RUN_NAME_LENGTH:
        raise ValueError(MSG_NAME_LENGTH)
    if not re.fullmatch(names.RUN_NAME_PATTERN, name):
        raise ValueError(MSG_NAME_FORM)
    return name


class ObjectMeta(BaseModel):
    """The metadata rlrun reads; the API server's other fields (managedFields, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _name(self) -> ObjectMeta:
        check_run_name(self.name)
        return self


class RLRun(BaseModel):
    """A whole RLRun object, as read from a YAML file or from the API server."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api_version: Literal["rlrun.dev/v1alpha1"] = Field(names.API_VERSION, alias="apiVersion")
    kind: Literal["RLRun"] = names.KIND
    metadata: ObjectMeta
    spec: RLRunSpec = Field(default_factory=RLRunSpec)
    status: RLRunStatus | None = None

    @classmethod
    def model_validate(cls, obj: Any, *, strict: bool | None = None, **kwargs: Any) -> RLRun:  # type: ignore[override]
        """Validate a document as the API server does: strictly, as JSON. Lax pydantic would coerce
        `suspend: "yes"` or `nodes: "2"` that the CRD refuses, so `rlrun render` / `rlrun local` and the
        cluster would disagree about the same file; JSON mode still reads RFC 3339 strings as times."""
        if isinstance(obj, cls):
            return obj
        text = json.dumps(obj, default=_json_value)
        return cls.model_validate_json(text, strict=True if strict is None else strict, **kwargs)


def _json_value(value: Any) -> str:
    """YAML may load an unquoted timestamp as a datetime; JSON carries it as RFC 3339, as the API does."""
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


__all__ = [
    "CONDITION_TYPES",
    "MSG_BACKOFF",
    "MSG_ENGINE_GPU",
    "MSG_ENV_RESERVED",
    "MSG_GPU_IN_RESOURCES",
    "MSG_LABELS_RESERVED",
    "MSG_MICRO_BATCH",
    "MSG_MODEL_IMMUTABLE",
    "MSG_NAME_FORM",
    "MSG_NAME_LENGTH",
    "MSG_PACKAGES_CREDS",
    "MSG_PROCS",
    "MSG_RESUME_FROM_IMMUTABLE",
    "MSG_STORAGE_EXCLUSIVE",
    "MSG_TP",
    "MSG_TRAINER_SHAPE_IMMUTABLE",
    "MSG_UPLOAD_BOTH",
    "MSG_UPLOAD_CREDS",
    "QUANTITY_PATTERN",
    "ROOT_VALIDATIONS",
    "Budget",
    "ComponentCount",
    "ComponentsStatus",
    "Condition",
    "EnvVar",
    "EnvWorkersSpec",
    "EnvironmentSpec",
    "FailurePolicy",
    "ImagesSpec",
    "InferenceSpec",
    "ModelSpec",
    "ObjectMeta",
    "OrchestratorSpec",
    "Phase",
    "PodScheduling",
    "ProgressStatus",
    "Quantity",
    "RLRun",
    "RLRunSpec",
    "RLRunStatus",
    "ResourceRequirements",
    "S",
    "SampleUploadSpec",
    "StatusSection",
    "StorageSpec",
    "TrainerSpec",
    "cel",
    "check_run_name",
    "to_runtime_config",
    "validations",
]
