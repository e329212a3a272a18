"""Rollouts (env-worker JSON) -> wire `TrainingSample`s, and the prompt-array strip.

A rollout's token lists are boxed Python ints (~36 bytes each); once packed into int32 bytes the lists
are dead weight that a buffered step would keep alive, so they are replaced by their counts and the
advantage, the `SampleStats` the sample log records (SEED-SPEC §12: the prompt-array strip that kept a 128 GB orchestrator from overflowing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from rlrun.runtime.wire import MMRefs, SampleStats, TrainingSample, pack_floats, pack_ints, pack_mask


def to_training_samples(rollout: Mapping[str, Any], advantage: float) -> list[TrainingSample]:
    """A scored rollout's samples: one, or one per segment of a multi-turn episode (envs/trajectory.py),
    each with the rollout's reward and advantage."""
    segments = rollout.get("segments")
    if segments is None:
        return [to_training_sample(rollout, advantage)]
    return [to_training_sample({**rollout, **segment}, advantage) for segment in segments]


def to_training_sample(rollout: Mapping[str, Any], advantage: float) -> TrainingSample:
    """One scored rollout as the trainer reads it; multimodal rollouts carry their refs (never pixels)."""
    completion_ids = rollout["completion_ids"]
    logprobs = rollout["completion_logprobs"]
    mask = rollout.get("completion_mask")
    if len(completion_ids) != len(logprobs) or (mask is not None and len(mask) != len(completion_ids)):
        raise ValueError(
            f"rollout {rollout.get('example_id')!r}: {len(completion_ids)} completion ids but "
            f"{len(logprobs)} logprobs and {'no' if mask is None else len(mask)} mask entries"
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
        completion_mask=None if mask is None else pack_mask(mask),
    )


def strip_token_arrays(rollout: dict[str, Any], advantage: float) -> dict[str, Any]:
    """Replace the rollout's token/logprob lists by its `SampleStats` (counts and advantage), in place.

    Messages, completion text, reward and refs stay: sample logging needs them. Returns the rollout.
    """
    parts = rollout.pop("segments", None) or [rollout]
    prompt = [p for part in parts if (p := part.pop("prompt_ids", None)) is not None]
    completion = [c for part in parts if (c := part.pop("completion_ids", None)) is not None]
    for part in parts:
        part.pop("completion_logprobs", None)
    stats = SampleStats(
        advantage=float(advantage),
        num_prompt_tokens=sum(map(len, prompt)) if prompt else None,
        num_completion_tokens=sum(map(len, completion)) if completion else None,
    )
    rollout.update(msgspec.structs.asdict(stats))
    return rollout


def policy_lag(trainer_version: int, rollouts: Sequence[Mapping[str, Any]]) -> int:
    """How many optimizer steps the oldest rollout's weights are behind `trainer_version`."""
    if not rollouts:
        return 0
    return max(0, trainer_version - min(int(r.get("policy_version", 0)) for r in rollouts))


def rewards_by_version(rollouts: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Reward sum and rollout count per policy version that generated them (JSON keys: the version).

    Recorded per step in metrics.jsonl so retention can rank checkpoints by their own policy's rollouts
    (`retention.keepBest`, runtime/retention.py); sums, not means, so steps combine exactly."""
    out: dict[str, dict[str, float | int]] = {}
    for r in rollouts:
        entry = out.setdefault(str(int(r.get("policy_version", 0))), {"sum": 0.0, "rollouts": 0})
        entry["sum"] += float(r["reward"])
        entry["rollouts"] += 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))
