"""Training samples -> per-rank padded micro-batches (`wire.MicroBatch`).

HF Qwen-VL models derive 3D (MRoPE) positions per row from `image_grid_thw`, so samples become padded
rows rather than one packed sequence (SEED-SPEC §9: HF MRoPE models cannot take packed boundaries).
Distribution keeps two invariants collectives depend on: every rank gets the same number of micro-batches,
and at each index every rank has the same modality (so every rank runs the vision tower, or none does).
Zero-loss dummies fill the gaps.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from rlrun.runtime.mm import merge_mm_refs
from rlrun.runtime.wire import EncodedTensor, MicroBatch, TrainingSample, floats, ints, masks


def _kind(sample: TrainingSample) -> str:
    if sample.mm_refs is not None and sample.mm_kwargs is not None:
        raise ValueError(f"sample {sample.example_id!r} carries both mm_refs and mm_kwargs; expected one")
    return "refs" if sample.mm_refs is not None else "kwargs" if sample.mm_kwargs is not None else "text"


def concat_kwargs(kwargs: Sequence[dict[str, EncodedTensor]]) -> dict[str, EncodedTensor]:
    """Concatenate encoded tensors key by key along dim 0 (pixel rows, grid rows)."""
    keys = kwargs[0].keys()
    if any(k.keys() != keys for k in kwargs):
        raise ValueError(f"cannot pack mm_kwargs with different keys: {[sorted(k) for k in kwargs]}")
    return {
        key: EncodedTensor.from_array(np.concatenate([k[key].to_array() for k in kwargs])) for key in keys
    }


def build_micro_batch(samples: Sequence[TrainingSample]) -> MicroBatch:
    """Right-padded rows; per-token arrays are aligned with `input_ids` (position t = token t).

    loss_mask marks completion tokens the policy sampled (a multi-turn sample's `completion_mask`; every
    completion token otherwise); `inference_logprobs[t]` is the inference logprob of token t.
    """
    rows = [(ints(s.prompt_ids), ints(s.completion_ids), floats(s.completion_logprobs)) for s in samples]
    seq_len = max(len(p) + len(c) for p, c, _ in rows)
    n = len(samples)
    input_ids = np.zeros((n, seq_len), dtype=np.int32)
    attention = np.zeros((n, seq_len), dtype=np.uint8)
    loss_mask = np.zeros((n, seq_len), dtype=np.uint8)
    advantages = np.zeros((n, seq_len), dtype=np.float32)
    logprobs = np.zeros((n, seq_len), dtype=np.float32)
    for i, ((prompt, completion, lp), sample) in enumerate(zip(rows, samples, strict=True)):
        p, c = len(prompt), len(completion)
        input_ids[i, :p] = prompt
        input_ids[i, p : p + c] = completion
        attention[i, : p + c] = 1
        loss_mask[i, p : p + c] = 1 if sample.completion_mask is None else masks(sample.completion_mask)
        advantages[i, p : p + c] = sample.advantage
        logprobs[i, p : p + c] = lp
    kind = _kind(samples[0])
    return MicroBatch(
        rows=n,
        seq_len=seq_len,
        input_ids=input_ids.tobytes(),
        attention_mask=attention.tobytes(),
        loss_mask=loss_mask.tobytes(),
        advantages=advantages.tobytes(),
        inference_logprobs=logprobs.tobytes(),
        num_samples=n,
        mm_refs=merge_mm_refs([s.mm_refs for s in samples]) if kind == "refs" else None,  # type: ignore[misc]
        mm_kwargs=concat_kwargs([s.mm_kwargs for s in samples]) if kind == "kwargs" else None,  # type: ignore[misc]
    )


def zero_loss_dummy(mb: MicroBatch) -> MicroBatch:
    """A copy that trains nothing but keeps its modality and sidecar (so the vision tower still runs)."""
    zeros8 = bytes(len(mb.loss_mask))
    return MicroBatch(
        rows=mb.rows,
        seq_len=mb.seq_len,
        input_ids=mb.input_ids,
        attention_mask=mb.attention_mask,
        loss_mask=zeros8,
        advantages=bytes(len(mb.advantages)),
        inference_logprobs=mb.inference_logprobs,
        num_samples=0,
        mm_kwargs=copy.deepcopy(mb.mm_kwargs),
        mm_refs=copy.deepcopy(mb.mm_refs),
    )


def _chunks(samples: list[TrainingSample], size: int) -> list[MicroBatch]:
    # Longest first so rows of similar length share a micro-batch (less padding).
    ordered = sorted(samples, key=lambda s: -(len(s.prompt_ids) + len(s.completion_ids)))
    return [build_micro_batch(ordered[i : i + size]) for i in range(0, len(ordered), size)]


def _pad_to_multiple(mbs: list[MicroBatch], world_size: int) -> list[MicroBatch]:
    missing = -len(mbs) % world_size
    return mbs + [zero_loss_dummy(mbs[0]) for _ in range(missing)] if mbs else mbs


def distribute(
    samples: Sequence[TrainingSample], micro_batch_size: int, world_size: int
) -> list[list[MicroBatch]]:
    """Per-rank micro-batch lists of equal length; multimodal first, modality aligned across ranks.

    Samples of different sidecar kinds (refs, kwargs, text) never share a micro-batch.
    """
    if micro_batch_size < 1 or world_size < 1:
        raise ValueError(f"micro_batch_size ({micro_batch_size}) and world_size ({world_size}) must be >= 1")
    by_kind: dict[str, list[TrainingSample]] = {"refs": [], "kwargs": [], "text": []}
    for sample in samples:
        by_kind[_kind(sample)].append(sample)
    ordered: list[MicroBatch] = []
    for kind in ("refs", "kwargs", "text"):
        ordered += _pad_to_multiple(_chunks(by_kind[kind], micro_batch_size), world_size)
    return [ordered[rank::world_size] for rank in range(world_size)]
