"""A received `MicroBatch` -> model-ready tensors in host memory, moved to the device one at a time.

Multimodal micro-batches get their pixels here: from refs through the materializer (the deferred path,
images decoded once per distinct file) or by decoding the orchestrator's mm_kwargs. Before any forward
the image-token count is checked against the grids, so a skewed processor fails loudly on this rank
(and, through the fail-together barrier, on all ranks) instead of inside a collective.

Every micro-batch of the step is loaded (and checked) before the first forward, but on the host: only the
micro-batch being computed lives on the device (`MicroBatchTensors.on`), so a step's device memory is the
model plus one micro-batch, not the model plus the whole step's pixels and tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlrun.runtime.wire import MicroBatch


@dataclass
class MicroBatchTensors:
    input_ids: torch.Tensor  # long [rows, seq]
    attention_mask: torch.Tensor  # long [rows, seq]
    loss_mask: torch.Tensor  # bool [rows, seq]
    advantages: torch.Tensor  # float32 [rows, seq]
    inference_logprobs: torch.Tensor  # float32 [rows, seq]
    model_kwargs: dict[str, torch.Tensor] = field(
        default_factory=dict
    )  # pixel_values, grids, mm_token_type_ids

    def tensors(self) -> list[torch.Tensor]:
        return [self.input_ids, self.attention_mask, self.loss_mask, self.advantages, self.inference_logprobs,
                *self.model_kwargs.values()]  # fmt: skip

    def on(self, device: torch.device) -> MicroBatchTensors:
        """A copy on `device` (asynchronous from pinned host memory); this one stays on the host."""
        return MicroBatchTensors(
            **{name: getattr(self, name).to(device, non_blocking=True) for name in _GRIDS},
            model_kwargs={k: v.to(device, non_blocking=True) for k, v in self.model_kwargs.items()},
        )


_GRIDS = ("input_ids", "attention_mask", "loss_mask", "advantages", "inference_logprobs")


def _grid(data: bytes, dtype: Any, mb: MicroBatch) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, dtype=dtype).reshape(mb.rows, mb.seq_len).copy())


def to_tensors(
    mb: MicroBatch, materializer: Any, image_token_id: int, *, pin: bool = False
) -> MicroBatchTensors:
    """Host tensors of `mb`, pinned when `pin` (a CUDA rank: the copy to the device then overlaps)."""
    tensors = MicroBatchTensors(
        input_ids=_grid(mb.input_ids, np.int32, mb).long(),
        attention_mask=_grid(mb.attention_mask, np.uint8, mb).long(),
        loss_mask=_grid(mb.loss_mask, np.uint8, mb).bool(),
        advantages=_grid(mb.advantages, np.float32, mb),
        inference_logprobs=_grid(mb.inference_logprobs, np.float32, mb),
    )
    if mb.is_multimodal:
        tensors.model_kwargs = _pixels(mb, materializer, tensors, image_token_id)
    if pin:
        for name in _GRIDS:
            setattr(tensors, name, getattr(tensors, name).pin_memory())
        tensors.model_kwargs = {k: v.pin_memory() for k, v in tensors.model_kwargs.items()}
    return tensors


def _pixels(
    mb: MicroBatch, materializer: Any, tensors: MicroBatchTensors, image_token_id: int
) -> dict[str, torch.Tensor]:
    from rlrun.runtime.mm import check_image_tokens, decode_mm_kwargs, image_rows, mm_token_type_ids

    if mb.mm_refs is not None:
        images = materializer.materialize(mb.mm_refs)
        pixels = {"pixel_values": images.pixel_values, "image_grid_thw": images.image_grid_thw}
        dropped = images.failed_slots
    else:
        pixels = decode_mm_kwargs(mb.mm_kwargs)  # type: ignore[arg-type]
        dropped = []
    merge = materializer.geometry.merge_size
    ids = tensors.input_ids
    check_image_tokens(ids, image_token_id, pixels["pixel_values"], pixels["image_grid_thw"], merge)
    if dropped:  # missingImagePolicy "drop": the rows whose image is gone train nothing
        rows = image_rows(ids, image_token_id, pixels["image_grid_thw"], merge)
        for slot in dropped:
            tensors.loss_mask[rows[slot]] = False
    return {**pixels, "mm_token_type_ids": mm_token_type_ids(ids, image_token_id)}
