"""Wire types shared by orchestrator, trainer master and data ranks (msgspec, msgpack).

All structs use positional (`array_like`) encoding: new fields go LAST so older readers keep their
positions. Token and float arrays travel as packed little-endian bytes (int32 / float32 / uint8), never
as Python lists: decoding 10^6 boxed ints costs ~30 ms, a memoryview costs nothing.

Multimodal samples carry exactly one of
  * `mm_refs`   -- descriptor + file URIs, a few hundred bytes (deferred materialization, the default), or
  * `mm_kwargs` -- encoded pixel tensors made by the orchestrator (the non-deferred path).
A sample or micro-batch is multimodal if either is set.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np


class EncodedTensor(msgspec.Struct, array_like=True, gc=False):
    """A tensor as (numpy dtype string, shape, raw C-order bytes)."""

    dtype: str
    shape: list[int]
    data: bytes

    @classmethod
    def from_array(cls, array: Any) -> EncodedTensor:
        arr = np.ascontiguousarray(array.numpy() if hasattr(array, "numpy") else array)
        return cls(dtype=arr.dtype.str, shape=list(arr.shape), data=arr.tobytes())

    def to_array(self) -> np.ndarray:
        """A read-only view over `data` (no copy)."""
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype)).reshape(self.shape)


MODALITY = "image"
"""The one modality MMRefs carry: the key of the descriptor's per-modality lists."""


class MMRefs(msgspec.Struct, array_like=True, gc=False):
    """Descriptor-only multimodal data plus where the source images are.

    descriptor = {"mm_hashes": {"image": [hash, ...]},
                  "mm_items": {"image": [{"image_grid_thw": [[t, h, w]]}, ...]},
                  "mm_placeholders": {"image": [[offset, length], ...]}}   (placeholders optional)
    uris = absolute file:// URIs of the images, in conversation order (duplicates allowed).
    """

    descriptor: dict[str, Any]
    uris: list[str]


class TrainingSample(msgspec.Struct, array_like=True, gc=False):
    """One scored completion, as the orchestrator hands it to the trainer."""

    prompt_ids: bytes  # int32
    completion_ids: bytes  # int32
    completion_logprobs: bytes  # float32, inference logprobs of completion_ids
    advantage: float
    reward: float
    env: str = ""
    example_id: str = ""
    policy_version: int = 0  # weights version that generated the completion
    mm_kwargs: dict[str, EncodedTensor] | None = None
    mm_refs: MMRefs | None = None
    # uint8 per completion token: 1 = sampled by the policy (trained), 0 = context a multi-turn environment
    # inserted (tool results, its messages); None = every completion token was sampled.
    completion_mask: bytes | None = None
    group: int = -1  # the run-wide group id (the orchestrator's ledger), so the trainer can account it

    @property
    def is_multimodal(self) -> bool:
        return self.mm_refs is not None or self.mm_kwargs is not None


class SampleStats(msgspec.Struct, kw_only=True):
    """What the sample log records about a scored rollout besides its messages and reward.

    These field names are the ONE place that names them: the orchestrator leaves exactly these keys on a
    rollout when it strips its token arrays, and the sample parquet has exactly these columns (a writer
    once read names the orchestrator never set, so every logged advantage and token count was null).
    """

    advantage: float | None = None
    num_prompt_tokens: int | None = None
    num_completion_tokens: int | None = None


class TrainingBatch(msgspec.Struct, array_like=True, gc=False):
    """One training step's samples, written atomically by the orchestrator (rollouts/step_<n>/batch.msgpack)."""

    step: int
    samples: list[TrainingSample]


class MicroBatch(msgspec.Struct, array_like=True, gc=False):
    """A padded [rows, seq_len] micro-batch for one data rank.

    HF Qwen-VL models compute 3D (MRoPE) positions per row from `image_grid_thw`, so samples are padded
    rows (right padding, `attention_mask` 0) rather than packed into one sequence.
    """

    rows: int
    seq_len: int
    input_ids: bytes  # int32 [rows, seq_len]
    attention_mask: bytes  # uint8 [rows, seq_len]
    loss_mask: bytes  # uint8 [rows, seq_len], 1 on completion tokens that train
    advantages: bytes  # float32 [rows, seq_len]
    inference_logprobs: bytes  # float32 [rows, seq_len]
    num_samples: int = 0  # real rows; zero-loss padding dummies do not count
    mm_kwargs: dict[str, EncodedTensor] | None = None
    mm_refs: MMRefs | None = None  # keep last

    @property
    def is_multimodal(self) -> bool:
        return self.mm_refs is not None or self.mm_kwargs is not None


def pack_ints(values: Any) -> bytes:
    return np.asarray(values, dtype=np.int32).tobytes()


def pack_floats(values: Any) -> bytes:
    return np.asarray(values, dtype=np.float32).tobytes()


def ints(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.int32)


def floats(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float32)


def pack_mask(values: Any) -> bytes:
    return np.asarray(values, dtype=np.uint8).tobytes()


def masks(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8)
