"""Clipped policy-gradient loss with the importance ratio against the inference engine's logprobs.

Rollouts were sampled by the inference engine, possibly from older weights (policy lag) and always with
a different numeric path, so each token is weighted by ratio = pi_train / pi_inference, clipped PPO-style
to keep one step from moving the policy far from the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossStats:
    loss_tokens: int
    clip_fraction: float
    ratio_mean: float
    # Sum over loss tokens of |trainer logprob - engine logprob|: the train/inference mismatch (plus the
    # policy lag when rollouts came from older weights). Divided by loss_tokens it is the mean |delta|.
    abs_logprob_delta_sum: float


# Elements of one chunk of the fused log-probability: its float32 [rows, positions, vocab] slice is the
# largest temporary (256 MiB; 441 positions of Qwen2-VL's 152k vocabulary), whatever the sequence length.
LOGPROB_CHUNK_ELEMENTS = 2**26


class _TokenLogprobs(torch.autograd.Function):
    """logp[t] = logits[t, target] / T - logsumexp(logits[t] / T), in float32, chunk by chunk.

    `log_softmax(logits.float())` materialized a float32 copy of the whole [rows, seq, vocab] logits and
    autograd kept it until backward: on a bf16 model the largest tensor of the step, twice the logits.
    Here only the per-position logsumexp is saved; backward rebuilds softmax one chunk at a time.
    """

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, targets: torch.Tensor, temperature: float, chunk: int
    ) -> torch.Tensor:
        wide = torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 when given it
        out = torch.empty(targets.shape, dtype=wide, device=logits.device)
        lse = torch.empty_like(out)
        for s in range(0, logits.shape[1], chunk):
            part = logits[:, s : s + chunk].to(wide) / temperature
            lse[:, s : s + chunk] = torch.logsumexp(part, dim=-1)
            picked = part.gather(-1, targets[:, s : s + chunk].unsqueeze(-1)).squeeze(-1)
            out[:, s : s + chunk] = picked - lse[:, s : s + chunk]
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        logits, targets, lse = ctx.saved_tensors
        t, chunk = ctx.temperature, ctx.chunk
        grad_logits = torch.empty_like(logits)
        for s in range(0, logits.shape[1], chunk):
            g = grad[:, s : s + chunk].unsqueeze(-1) / t
            # d logp / d logits = (onehot(target) - softmax) / T
            part = (
                -torch.exp(logits[:, s : s + chunk].to(lse.dtype) / t - lse[:, s : s + chunk].unsqueeze(-1))
                * g
            )
            part.scatter_add_(-1, targets[:, s : s + chunk].unsqueeze(-1), g)
            grad_logits[:, s : s + chunk] = part.to(logits.dtype)
        return grad_logits, None, None, None


def token_logprobs(
    logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0, chunk: int | None = None
) -> torch.Tensor:
    """[rows, seq] float32 (float64 for float64 logits) logprob of token t under the logits at t-1; position 0 (no predictor) is 0.

    Logits are divided by the sampling temperature so the ratio compares like with like. No float32
    full-vocabulary tensor of the whole sequence is built (see `_TokenLogprobs`); `chunk` (positions per
    chunk) defaults to what fits `LOGPROB_CHUNK_ELEMENTS`.
    """
    rows, _, vocab = logits.shape
    chunk = chunk or max(1, LOGPROB_CHUNK_ELEMENTS // max(rows * vocab, 1))
    picked = _TokenLogprobs.apply(logits[:, :-1], input_ids[:, 1:].long(), temperature, chunk)
    return F.pad(picked, (1, 0))


def policy_loss(
    logprobs: torch.Tensor,
    inference_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    clip_epsilon: float,
    normalizer: float,
) -> tuple[torch.Tensor, LossStats]:
    """Sum of -min(r*A, clip(r, 1-eps, 1+eps)*A) over masked tokens, divided by `normalizer`.

    `normalizer` is the step's total loss-token count over all ranks, so summing the ranks' gradients
    gives the masked mean over the whole step whatever the split.
    """
    mask = loss_mask.bool()
    ratio = torch.exp(logprobs - inference_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    loss = torch.where(mask, per_token, torch.zeros_like(per_token)).sum() / max(normalizer, 1.0)
    n = int(mask.sum())
    with torch.no_grad():
        was_clipped = (unclipped != torch.minimum(unclipped, clipped)) & mask
        stats = LossStats(
            loss_tokens=n,
            clip_fraction=float(was_clipped.sum()) / max(n, 1),
            ratio_mean=float(ratio[mask].mean()) if n else 1.0,
            abs_logprob_delta_sum=float((logprobs - inference_logprobs).abs()[mask].sum()),
        )
    return loss, stats


def signal_fraction(informative_groups: int, groups_per_step: int) -> float:
    """The share of the step's groups that carry a learning signal (non-degenerate ones), in [0, 1].

    The trainer multiplies the step's learning rate by it (`trainer.scaleStepBySignal`). Degenerate groups
    are dropped before training, and the token mean, the norm clip and Adam make every step about the same
    size, so without the scale a step trained on one group moves the policy as far as one trained on
    sixteen: once most groups were solved, those few groups' noise (e.g. pushing down a codeword that a
    solved colour shares) knocked learned colours out for good. With it the step size follows the evidence.
    The learning rate, not the gradient, is scaled: Adam divides a smaller gradient out again.
    """
    if groups_per_step < 1:
        raise ValueError(f"groups_per_step must be >= 1, got {groups_per_step}")
    return min(max(informative_groups, 0), groups_per_step) / groups_per_step
