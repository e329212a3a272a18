import math

import pytest
import torch

from rlrun.runtime.trainer.loss import policy_loss, token_logprobs


def test_token_logprobs_align_with_the_predicted_token():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = torch.tensor([[0, 0, 1]])
    lp = token_logprobs(logits, ids)
    assert lp[0].tolist() == pytest.approx([0.0, math.log(0.5), math.log(0.8)], abs=1e-6)
    hot = token_logprobs(logits, ids, temperature=0.5)
    assert hot[0, 1].item() == pytest.approx(math.log(0.25 / (0.25 + 0.0625 + 0.0625)), abs=1e-6)


def test_clipped_loss_matches_a_hand_computation():
    # Two rows, tokens 1.. masked; ratios e^0.5 (clipped to 1.2 for A>0), e^-0.5 (kept for A>0), 1.
    new = torch.tensor([[0.0, -0.5, -1.5], [0.0, -1.0, 0.0]], requires_grad=True)
    old = torch.tensor([[0.0, -1.0, -1.0], [0.0, -1.0, 0.0]])
    adv = torch.tensor([[0.0, 1.0, 1.0], [0.0, -2.0, 0.0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    loss, stats = policy_loss(new, old, adv, mask, clip_epsilon=0.2, normalizer=3)
    r1, r2 = math.exp(0.5), math.exp(-0.5)
    expected = (-min(r1 * 1, 1.2 * 1) - min(r2 * 1, 0.8 * 1) - min(1.0 * -2, 1.0 * -2)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats.loss_tokens == 3 and stats.clip_fraction == pytest.approx(1 / 3)
    # The train/inference mismatch counts masked tokens only: |0.5| + |-0.5| + |0|.
    assert stats.abs_logprob_delta_sum == pytest.approx(1.0)
    loss.backward()
    # The clipped token gets no gradient; the kept ones get -A*ratio/normalizer; masked ones 0.
    assert new.grad.flatten().tolist() == pytest.approx([0.0, 0.0, -r2 / 3, 0.0, 2 / 3, 0.0], abs=1e-6)


def test_negative_advantage_clips_at_the_lower_bound():
    new, old = torch.tensor([[0.0, -2.0]]), torch.tensor([[0.0, -1.0]])  # ratio e^-1 < 0.8
    loss, stats = policy_loss(new, old, torch.tensor([[0.0, -1.0]]), torch.tensor([[0, 1]]), 0.2, 1)
    assert loss.item() == pytest.approx(0.8) and stats.clip_fraction == 1.0
