"""Rollouts (env-worker JSON) -> wire `TrainingSample`s, and the prompt-array strip.

A rollout's token lists are boxed Python ints (~36 bytes each); once packed into int32 bytes the lists
are dead weight that a buffered step would keep alive, so they are replaced by their counts and the
advantage, the `SampleStats` the sample log records (SEED-SPEC §12: the prompt-array strip that kept a 128 GB orchestrator from overflowing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from rlrun.runtime.wire import MMRefs, SampleStats, TrainingSample, pack_floats, pack_ints


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


def strip_token_arrays(rollout: dict[str, Any], advantage: float) -> dict[str, Any]:
    """Replace the rollout's token/logprob lists by its `SampleStats` (counts and advantage), in place.

    Messages, completion text, reward and refs stay: sample logging needs them. Returns the rollout.
    """
    prompt = rollout.pop("prompt_ids", None)
    completion = rollout.pop("completion_ids", None)
    rollout.pop("completion_logprobs", None)
    stats = SampleStats(
        advantage=float(advantage),
        num_prompt_tokens=None if prompt is None else len(prompt),
        num_completion_tokens=None if completion is None else len(completion),
    )
    rollout.update(msgspec.structs.asdict(stats))
    return rollout


def policy_lag(trainer_version: int, rollouts: Sequence[Mapping[str, Any]]) -> int:
    """How many optimizer steps the oldest rollout's weights are behind `trainer_version`."""
    if not rollouts:
        return 0
    return max(0, trainer_version - min(int(r.get("policy_version", 0)) for r in rollouts))
