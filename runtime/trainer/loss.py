"""Clipped policy-gradient loss with the importance ratio against the inference engine's logprobs.

Rollouts were sampled by the inference engine, possibly from older weights (policy lag) and always with
a different numeric path, so each token is weighted by ratio = pi_train / pi_inference, clipped PPO-style
to keep one step from moving the policy far from the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """[rows, seq] logprob of token t under the logits at t-1; position 0 (no predictor) is 0.

    Logits are divided by the sampling temperature so the ratio compares like with like.
    """
    logp = F.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    picked = logp.gather(-1, input_ids[:, 1:].long().unsqueeze(-1)).squeeze(-1)
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
