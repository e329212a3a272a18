"""Fork lineage (`spec.resumeFrom`): is the parent fit to fork from, and is its volume protected. Pure.

A fork shares its parent's volume (`render.common.claim_name`); the trainer hard-links the parent's
checkpoint into the fork's own run directory at its first start. The parent's PVC is owned by the parent
RLRun; the operator adds the fork as a second, non-controller owner, and Kubernetes' garbage collector
deletes an object only once every owner is gone: deleting the parent keeps the volume while a fork exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlrun.operator import names
from rlrun.operator.api import RLRun, RLRunSpec
from rlrun.operator.render.common import claim_name, owner_reference

FORK_FAILED = "ResumeSourceInvalid"


@dataclass(frozen=True)
class Lineage:
    """What a pass observed of a fork's parent: the RLRun (None: not found) and its volume's PVC (None:
    not found, or a claim the parent does not own)."""

    parent: RLRun | None = None
    claim: dict[str, Any] | None = None


def fork_problem(run: RLRun, lineage: Lineage) -> str | None:
    """Why `run` cannot fork from its `resumeFrom` parent, precisely, or None."""
    fork = run.spec.resume_from
    if fork is None:
        return None
    parent = lineage.parent
    namespace = run.metadata.namespace or "default"
    if parent is None:
        return f"spec.resumeFrom.run: RLRun {fork.run!r} not found in namespace {namespace!r}"
    mine, theirs = run.spec, parent.spec
    if (mine.model.name, mine.model.revision) != (theirs.model.name, theirs.model.revision):
        return (
            f"spec.resumeFrom: model {_model(mine)} differs from run {fork.run!r}'s {_model(theirs)}: "
            "a checkpoint loads only into the model it was trained from"
        )
    if claim_name(run) != claim_name(parent):
        return (
            f"spec.storage.existingClaim: a fork reads run {fork.run!r}'s checkpoint from its volume "
            f"{claim_name(parent)!r}; set existingClaim to it (or leave it unset), not {claim_name(run)!r}"
        )
    progress = parent.status.progress if parent.status else None
    reached = progress.step if progress else None
    if reached is not None and reached < fork.step:
        return f"spec.resumeFrom.step: run {fork.run!r} has reached step {reached}, not {fork.step}"
    return None


def _model(spec: RLRunSpec) -> str:
    return repr(spec.model.name + (f"@{spec.model.revision}" if spec.model.revision else ""))


def protection_patch(run: RLRun, lineage: Lineage) -> dict[str, Any] | None:
    """The strategic-merge patch that adds `run` as an owner of its parent's PVC, when it is not one yet
    and the parent owns that PVC (an `existingClaim` is the user's: never touched)."""
    claim, parent = lineage.claim, lineage.parent
    if claim is None or parent is None or not run.metadata.uid:
        return None
    owners = claim["metadata"].get("ownerReferences") or []
    if not any(o.get("uid") == parent.metadata.uid for o in owners):
        return None
    if any(o.get("uid") == run.metadata.uid for o in owners):
        return None
    # Not the controller, and no blockOwnerDeletion (that needs update rights on the fork's finalizers).
    ref = {**owner_reference(run), "controller": False, "blockOwnerDeletion": False}
    return {"metadata": {"ownerReferences": [ref]}}


def parent_claim(run: RLRun) -> str | None:
    """The PVC a fork protects: its parent's `<parent>-assets` (unless the fork names an existingClaim)."""
    fork = run.spec.resume_from
    if fork is None or run.spec.storage.existing_claim:
        return None
    return names.child_name(fork.run, names.SUFFIX_ASSETS)
