"""Benchmark: trainer tensor memory per step, the GPU path's figures measured on CPU by tensor sizes.

    .venv/bin/python bench/bench_trainer_memory.py          # ~1 min, ~4 GB RAM

Two figures, each beside the way it was done before, in the same run:
  1. micro-batch tensors resident on the device during a step: a step of rollouts x one 1024x1024 image
     (stock Qwen2-VL processor settings) packed by the trainer's own `distribute` and loaded by its own
     `to_tensors` + Materializer. Before: every micro-batch was moved to the device ahead of the first
     forward (the sum); now one micro-batch at a time (the largest).
  2. the log-probability of the sampled tokens at Qwen2-VL's vocabulary (151936) from bf16 logits: bytes
     autograd keeps for backward (beyond the logits) and the largest tensor allocated in forward or
     backward (the gradient of the logits, as large as the logits, is common to both), for the float32 `log_softmax` of the
     whole sequence (before) and the chunked fused function (now), with forward+backward seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from bench_mm import SIDE, make_jpeg, rollout_refs, sample_for
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import Qwen2VLImageProcessorPil

from rlrun.runtime.assets import RunTree, write_image
from rlrun.runtime.mm import Geometry, Materializer, load_image_processor
from rlrun.runtime.trainer.batches import to_tensors
from rlrun.runtime.trainer.loss import token_logprobs
from rlrun.runtime.trainer.packing import distribute

QWEN2_VL_VOCAB = 151936


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# ------------------------------------------------------------------------------ 1. resident micro-batches


def micro_batch_bytes(rollouts: int, micro_batch_size: int) -> list[int]:
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        Qwen2VLImageProcessorPil().save_pretrained(model_dir)  # the stock Qwen2-VL settings
        processor = load_image_processor(model_dir)
        tree = RunTree(Path(tmp) / "outputs", "bench").ensure()
        merge = Geometry.of(processor).merge_size
        samples = []
        for i in range(rollouts):
            uri = write_image(tree.images_dir, make_jpeg(i), "image/jpeg").as_uri()
            samples.append(sample_for(rollout_refs(processor, [uri]), merge))
        (mbs,) = distribute(samples, micro_batch_size, world_size=1)
        with Materializer(processor) as materializer:
            return [
                sum(nbytes(t) for t in to_tensors(mb, materializer, image_token_id=151655).tensors())
                for mb in mbs
            ]


# ------------------------------------------------------------------------------------ 2. log-probabilities


class LargestTensor(TorchDispatchMode):
    """The largest tensor any operation allocates while active: the peak temporary of a computation."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and not t._is_view():  # a view allocates nothing
                self.largest = max(self.largest, nbytes(t))
        return out


def full_softmax_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """The trainer's code before: a float32 log_softmax of the whole sequence."""
    logp = F.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    return F.pad(logp.gather(-1, ids[:, 1:].long().unsqueeze(-1)).squeeze(-1), (1, 0))


def logprob_costs(fn: Any, rows: int, seq: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, seq, QWEN2_VL_VOCAB, generator=gen).to(torch.bfloat16).requires_grad_()
    ids = torch.randint(0, QWEN2_VL_VOCAB, (rows, seq), generator=gen)
    saved: list[torch.Tensor] = []
    largest = LargestTensor()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t), largest:
        out = fn(logits, ids, 1.0)
    # Storage, not view, sizes: a saved slice of the logits costs nothing beyond the logits.
    kept = sum(
        nbytes(t) for t in saved if t.untyped_storage().data_ptr() != logits.untyped_storage().data_ptr()
    )
    out.sum().backward()
    return {
        "logits_mb": nbytes(logits) / 2**20,
        "kept_mb": kept / 2**20,
        "largest_mb": largest.largest / 2**20,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--seq", type=int, default=2048)
    args = parser.parse_args()

    sizes = micro_batch_bytes(args.rollouts, args.micro_batch_size)
    print(
        f"1. micro-batch tensors on the device: {args.rollouts} rollouts x one {SIDE}x{SIDE} image, "
        f"micro-batch size {args.micro_batch_size} -> {len(sizes)} micro-batches"
    )
    before, now = sum(sizes), max(sizes)
    print(f"   before (all moved up front): {before / 2**20:8.1f} MiB")
    print(f"   now (one at a time):         {now / 2**20:8.1f} MiB   {before / now:.1f}x less")

    print(f"\n2. logprobs of {args.rows} x {args.seq} tokens at vocabulary {QWEN2_VL_VOCAB}, bf16 logits")
    print(
        "   path                        logits MiB   kept for backward MiB   largest tensor MiB (fwd+bwd)   fwd+bwd s"
    )
    runs = [("before: float32 log_softmax", full_softmax_logprobs), ("now: chunked fused", token_logprobs)]
    for label, fn in runs:
        r = logprob_costs(fn, args.rows, args.seq)
        print(
            f"   {label:<27} {r['logits_mb']:>10.0f}   {r['kept_mb']:>21.1f}   {r['largest_mb']:>21.1f}"
            f"   {r['seconds']:>9.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
