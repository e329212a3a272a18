"""Multi-turn tool rollouts, from the real env-worker against the real inference server (tiny model) to
the tensors a trainer rank builds: the loss mask covers exactly the tokens the policy sampled, each with
its inference logprob, and the trainer's own logprobs of those positions agree with inference's.

The environment is the built-in calculator whose tool also returns a picture in its first reply (a later
turn's image, which must travel as a ref like a first-turn image), rewarded by a hash of the conversation
so that rewards vary within a group (a random tiny model never computes). Every chat completion
inference answered is recorded off the real HTTP traffic (an httpx response hook), so "what the policy
sampled" comes from inference itself, not from the code under test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import torch
from live_rollouts import PictureCalculator, produce

from rlrun.runtime.envs.builtin.calculator import Calculator
from rlrun.runtime.envs.registry import make_environment
from rlrun.runtime.envs.worker import Sampling, image_token_id
from rlrun.runtime.models.chat import RENDERER_ONLY_TOKENS
from rlrun.runtime.orchestrator.samples import to_training_samples
from rlrun.runtime.trainer.batches import to_tensors
from rlrun.runtime.trainer.loss import token_logprobs
from rlrun.runtime.trainer.main import _materializer
from rlrun.runtime.trainer.model import load_policy
from rlrun.runtime.trainer.packing import build_micro_batch
from rlrun.runtime.wire import floats, ints, masks

GROUP = 4


async def _produce(stack: Any, env: Calculator, indices: list[int]) -> tuple[list[dict], list[dict]]:
    """Rollouts as the orchestrator receives them, and every chat completion inference answered."""
    return await produce(stack, env, [(i, Sampling(max_tokens=4, seed=5)) for i in indices], GROUP)


@pytest.fixture(scope="module")
def episodes(text_stack):
    env = PictureCalculator(num_examples=8, max_operand=9, max_turns=3, format_reward=0.1, seed=0)
    return asyncio.run(_produce(text_stack, env, [0, 1]))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of 1s."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def test_the_mask_covers_exactly_the_sampled_tokens_with_their_inference_logprobs(episodes, text_stack):
    rollouts, answered = episodes
    assert all(r["turns"] >= 2 for r in rollouts), [r["turns"] for r in rollouts]  # the tool was driven
    sampled = sorted(  # logprobs as the float32 the wire carries
        (tuple(c["token_ids"]), tuple(float(np.float32(x["logprob"])) for x in c["logprobs"]["content"]))
        for out in answered
        for c in out["choices"]
        if c["token_ids"]
    )
    samples = [s for r in rollouts for s in to_training_samples(r, advantage=1.0)]
    in_samples = []
    banned = set(text_stack.engine.tokenizer.convert_tokens_to_ids(list(RENDERER_ONLY_TOKENS)))
    merged = 0
    for s in samples:
        ids, lps, mask = ints(s.completion_ids), floats(s.completion_logprobs), masks(s.completion_mask)
        runs = _runs(mask)
        merged += len(runs) > 1
        for a, b in runs:
            in_samples.append((tuple(int(t) for t in ids[a:b]), tuple(float(x) for x in lps[a:b])))
        assert not (lps[mask == 0]).any()  # context tokens carry no logprob
        assert not set(ids[mask == 1].tolist()) & banned  # the policy never samples a header
    # Every sampled token is trained exactly once, with its own logprob; nothing else is.
    assert sorted(in_samples) == sampled
    assert merged, "no episode kept several turns in one sample (the prefix check never held)"


def test_the_trainer_sees_later_turn_images_and_agrees_on_the_logprobs(episodes, text_stack):
    rollouts, _ = episodes
    cfg = text_stack.config
    samples = [s for r in rollouts for s in to_training_samples(r, advantage=1.0)]
    with_images = [s for s in samples if s.mm_refs is not None]
    assert with_images, "no sample holds the image of the tool's reply"
    model_path = cfg.model.name
    model = load_policy(model_path, torch.device("cpu")).eval()
    for batch in ([s for s in samples if s.mm_refs is None], with_images):
        mb = build_micro_batch(batch)
        with _materializer(cfg, model_path) as materializer:  # counts image tokens against the grids
            t = to_tensors(mb, materializer, image_token_id(model_path))
        with torch.no_grad():
            logits = model(
                input_ids=t.input_ids, attention_mask=t.attention_mask, use_cache=False, **t.model_kwargs
            ).logits
        mine = token_logprobs(logits, t.input_ids)
        assert int(t.loss_mask.sum()) == sum(int(masks(s.completion_mask).sum()) for s in batch)
        delta = (mine - t.inference_logprobs).abs()[t.loss_mask]
        assert float(delta.max()) < 1e-3, float(delta.max())


def test_calculator_tool_and_reward():
    env = make_environment("calculator", {"num_examples": 4})
    example = env.example(0)
    question = example.messages[0]["content"].removesuffix("=?")
    ask = [*example.messages, {"role": "assistant", "content": f"let me see {question}"}]
    assert env.respond(example, ask) == [{"role": "tool", "content": example.answer}]
    assert env.respond(example, [*example.messages, {"role": "assistant", "content": "hm"}]) == [
        {"role": "tool", "content": "no expression"}
    ]
    final = [
        *ask,
        {"role": "tool", "content": example.answer},
        {"role": "assistant", "content": example.answer},
    ]
    assert env.respond(example, final) is None
    assert env.score(example, final) == 1.0
    assert env.reward(example, "it is 1000") == 0.1 and env.reward(example, "no idea") == 0.0
    assert Calculator.Args(num_examples=1).max_turns == 3
    assert (
        env.respond(example, [{"role": "assistant", "content": "9" * 100 + "*9"}])[0]["content"]
        == "no expression"
    )
