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


def _reference_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """The textbook form: a float32 log_softmax over the whole sequence."""
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    return torch.nn.functional.pad(logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1), (1, 0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [1, 3, 7, 1024])  # one position, uneven chunks, one chunk for all
def test_chunked_logprobs_and_their_gradient_match_the_full_softmax(dtype, chunk):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 8, 50, generator=gen) * 3).to(dtype)
    ids = torch.randint(0, 50, (2, 8), generator=gen)
    upstream = torch.randn(2, 8, generator=gen)
    got_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    got = token_logprobs(got_in, ids, temperature=0.7, chunk=chunk)
    ref = _reference_logprobs(ref_in, ids, 0.7)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    (got * upstream).sum().backward()
    (ref * upstream).sum().backward()
    assert got_in.grad is not None and got_in.grad.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got_in.grad, ref_in.grad, rtol=tol, atol=tol)


def test_logprob_gradient_passes_gradcheck():
    logits = torch.randn(1, 5, 6, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 6, (1, 5))
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, ids, 1.3, chunk=2), (logits,))


def test_no_float32_full_vocabulary_tensor_is_kept_for_backward():
    """On a bf16 model the float32 log_softmax of the whole sequence was the step's largest tensor."""
    logits = torch.randn(2, 64, 1000).to(torch.bfloat16).requires_grad_()
    ids = torch.randint(0, 1000, (2, 64))
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        token_logprobs(logits, ids, chunk=16).sum()
    full_vocab = [t for t in saved if t.dtype == torch.float32 and t.dim() == 3]
    assert not full_vocab, [tuple(t.shape) for t in full_vocab]
    # What it keeps: the logits it was given (no copy) and one float per position.
    assert sum(t.numel() * t.element_size() for t in saved) <= logits.numel() * 2 + 2 * 64 * 16
