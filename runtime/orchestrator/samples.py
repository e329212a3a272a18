"""Rollouts (env-worker JSON) -> wire `TrainingSample`s, and the prompt-array strip.

A rollout's token lists are boxed Python ints (~36 bytes each); once packed into int32 bytes the lists
are dead weight that a buffered step would keep alive, so they are replaced by their counts
(SEED-SPEC §12: the prompt-array strip that kept a 128 GB orchestrator from overflowing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlrun.runtime.wire import MMRefs, TrainingSample, pack_floats, pack_ints


def to_training_sample(rollout: Mapping[str, Any], advantage: float) -> TrainingSample:
    """One scored rollout as the trainer reads it; multimodal rollouts carry their refs (never pixels)."""
    completion_ids = rollout["completion_ids"]
    logprobs = rollout["completion_logprobs"]
    if len(completion_ids) != len(logprobs):
        raise ValueError(
            f"rollout {rollout.get('example_id')!r}: {len(completion_ids)} completion ids but "
            f"{len(logprobs)} logprobs"
        )
    mm = rollout.get("mm")
    return TrainingSample(
        prompt_ids=pack_ints(rollout["prompt_ids"]),
        completion_ids=pack_ints(completion_ids),
        completion_logprobs=pack_floats(logprobs),
        advantage=float(advantage),
        reward=float(rollout["reward"]),
        env=str(rollout.get("env", "")),
        example_id=str(rollout.get("example_id", "")),
        policy_version=int(rollout.get("policy_version", 0)),
        mm_refs=MMRefs(descriptor=mm["descriptor"], uris=list(mm["uris"])) if mm else None,
    )


def strip_token_arrays(rollout: dict[str, Any]) -> dict[str, Any]:
    """Replace the rollout's token/logprob lists by their counts, in place; returns the rollout.

    Messages, completion text, reward and refs stay: sample logging needs them.
    """
    for key in ("prompt_ids", "completion_ids", "completion_logprobs"):
        values = rollout.pop(key, None)
        if values is not None:
            rollout[f"num_{key}"] = len(values)
    return rollout


def policy_lag(trainer_version: int, rollouts: Sequence[Mapping[str, Any]]) -> int:
    """How many optimizer steps the oldest rollout's weights are behind `trainer_version`."""
    if not rollouts:
        return 0
    return max(0, trainer_version - min(int(r.get("policy_version", 0)) for r in rollouts))
