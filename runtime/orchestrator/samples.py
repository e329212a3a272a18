"""Rollouts (env-worker JSON) -> wire `TrainingSample`s, and the prompt-array strip.

A rollout's token lists are boxed Python ints (~36 bytes each); once packed into int32 bytes the lists
are dead weight that a buffered step would keep alive, so they are replaced by their counts and the
advantage, the `SampleStats` the sample log records (SEED-SPEC §12: the prompt-array strip that kept a 128 GB orchestrator from overflowing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from rlrun.runtime.wire import (
    MODALITY,
    MMRefs,
    SampleStats,
    TrainingSample,
    pack_floats,
    pack_ints,
    pack_mask,
)


def to_training_samples(rollout: Mapping[str, Any], advantage: float) -> list[TrainingSample]:
    """A scored rollout's samples: one, or one per segment of a multi-turn episode (envs/trajectory.py),
    each with the rollout's reward and advantage."""
    return [to_training_sample(part, advantage) for part in sample_parts(rollout)]


def sample_parts(rollout: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """What becomes one training sample each: the rollout, or each segment of a multi-turn episode merged
    over the rollout's shared fields (reward, env, example id, policy version)."""
    segments = rollout.get("segments")
    if segments is None:
        return [rollout]
    return [{**rollout, **segment} for segment in segments]


LengthOutcome = Literal["kept", "truncated", "too_long"]


@dataclass(frozen=True)
class Fitted:
    """A sample part fitted to `trainer.maxSeqLen`: the part to train (None when it was dropped), what
    happened to it, and why it was dropped (for the one log line a dropped sample gets)."""

    part: Mapping[str, Any] | None
    outcome: LengthOutcome
    reason: str = ""


def fit_to_max_seq_len(part: Mapping[str, Any], max_seq_len: int | None) -> Fitted:
    """Cut one sample part (prompt_ids + completion_ids, with its logprobs, mask and image refs) to at most
    `max_seq_len` tokens, so no sample can outgrow the trainer's memory. Pure: `part` is not modified.

    The cut never splits an image: the trainer checks that the image tokens of a sequence match the
    features of its images exactly (mm/tripwires.py `check_image_tokens`), so a cut inside an image's
    placeholder span moves to just before it, and every image whose span no longer lies wholly in the sample
    leaves its refs (hash, grid, placeholder, URI). Spans come from the descriptor's `mm_placeholders`
    (the env-worker always writes them); a sample with images but without them cannot be cut safely and is
    dropped. A cut sample with no trained token left (the prompt alone is too long, or only context
    survived) trains nothing and is dropped: the caller counts and logs it, never silently.
    """
    prompt, completion = part["prompt_ids"], part["completion_ids"]
    if max_seq_len is None or len(prompt) + len(completion) <= max_seq_len:
        return Fitted(part, "kept")
    cut = max_seq_len
    mm = part.get("mm")
    kept_images: int | None = None
    if mm:
        descriptor = mm["descriptor"]
        images = len((descriptor.get("mm_hashes") or {}).get(MODALITY) or [])
        spans = (descriptor.get("mm_placeholders") or {}).get(MODALITY)
        if images and spans is None:
            return Fitted(None, "too_long", "it has images but no placeholder spans to cut between")
        ordered = sorted(((int(o), int(n)) for o, n in spans or []), reverse=True)
        for offset, length in ordered:  # last first: a cut moved before one image may land in the previous
            if offset < cut < offset + length:
                cut = offset
        kept_images = sum(offset + length <= cut for offset, length in spans or [])
    if cut <= len(prompt):
        return Fitted(None, "too_long", f"its prompt ({len(prompt)} tokens) leaves no completion token")
    n = cut - len(prompt)
    mask = part.get("completion_mask")
    if not (completion[:n] if mask is None else any(mask[:n])):
        return Fitted(None, "too_long", f"no token the policy sampled lies within the first {cut} tokens")
    out = {
        **part,
        "completion_ids": list(completion[:n]),
        "completion_logprobs": list(part["completion_logprobs"][:n]),
    }
    if mask is not None:
        out["completion_mask"] = list(mask[:n])
    if mm and kept_images is not None:
        out["mm"] = _first_images(mm, kept_images)
    return Fitted(out, "truncated")


def _first_images(mm: Mapping[str, Any], keep: int) -> dict[str, Any] | None:
    """`mm` ({"descriptor", "uris"}) with only its first `keep` images (None when none is left). Images are
    in sequence order (the placeholders'), and so are the URIs when there is one per image; otherwise the
    URIs stay whole: the materializer fills slots by hash and skips the images no slot names."""
    if keep == 0:
        return None
    descriptor = mm["descriptor"]
    images = len(descriptor["mm_hashes"][MODALITY])
    cut = {
        key: {**descriptor[key], MODALITY: list(descriptor[key][MODALITY][:keep])}
        for key in ("mm_hashes", "mm_items", "mm_placeholders")
        if key in descriptor
    }
    uris = list(mm["uris"])
    return {**mm, "descriptor": {**descriptor, **cut}, "uris": uris[:keep] if len(uris) == images else uris}


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
