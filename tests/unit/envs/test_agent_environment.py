"""An agent environment (base.AgentEnvironment: a framework with its own agent loop, as verifiers) against
the real env-worker and the real inference server (tiny model): its agent is the real OpenAI SDK calling
the env-worker's loopback proxy, one turn streamed and one not. The samples hold exactly the ids and
logprobs inference answered (recorded off the real HTTP traffic, not by the code under test), the mask
covers only sampled tokens, the reward is the environment's, and the SDK saw inference's own text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from live_rollouts import produce
from openai import AsyncOpenAI

from rlrun.runtime.envs.base import AgentEnvironment, AgentEpisode
from rlrun.runtime.envs.worker import RolloutError, Sampling

GROUP = 3


class TwoTurnAgent(AgentEnvironment):
    """Asks, then follows up: the first call streamed (as verifiers' chat program does), the second not."""

    id = "two-turn-agent"

    def __init__(self) -> None:
        self.seen: list[str] = []  # the assistant texts the SDK returned

    def __len__(self) -> int:
        return 2

    async def play(self, index: int, base_url: str, model: str) -> AgentEpisode:
        client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
        messages: list[dict[str, Any]] = [{"role": "user", "content": f"Say word {index}"}]
        stream = await client.chat.completions.create(
            model=model, messages=messages, stream=True, temperature=0.0, max_tokens=99
        )
        first = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "Again"}]
        reply = await client.chat.completions.create(model=model, messages=messages)
        second = reply.choices[0].message.content or ""
        self.seen += [first, second]
        messages.append({"role": "assistant", "content": second})
        await client.close()
        return AgentEpisode(f"agent-{index}", messages, 0.25 * (index + 1))


class Silent(TwoTurnAgent):
    async def play(self, index: int, base_url: str, model: str) -> AgentEpisode:
        return AgentEpisode("silent", [], 1.0)


async def _produce(stack: Any, env: AgentEnvironment) -> tuple[list[dict], list[dict]]:
    return await produce(stack, env, [(1, Sampling(max_tokens=4, seed=3))], GROUP)


def test_an_agent_environments_samples_are_what_inference_sampled(text_stack):
    env = TwoTurnAgent()
    rollouts, answered = asyncio.run(_produce(text_stack, env))
    assert len(rollouts) == GROUP and len(answered) == 2 * GROUP  # the run's max_tokens, not the agent's 99
    assert all(len(c["choices"][0]["token_ids"]) <= 4 for c in answered)
    assert sorted(env.seen) == sorted(c["choices"][0]["message"]["content"] for c in answered)
    prompts = {tuple(c["prompt_token_ids"]) for c in answered}
    for rollout in rollouts:
        assert rollout["reward"] == 0.5 and rollout["turns"] == 2 and rollout["example_id"] == "agent-1"
        for segment in rollout["segments"]:
            assert tuple(segment["prompt_ids"]) in prompts  # every sample starts at a prompt inference saw
            ids = segment["prompt_ids"] + segment["completion_ids"]
            mask = np.array(segment["completion_mask"])
            lps = np.array(segment["completion_logprobs"])
            assert not lps[mask == 0].any()
            covered = np.zeros_like(mask)
            for turn in answered:  # each turn inference answered inside this sample: masked 1, its logprobs
                start = len(turn["prompt_token_ids"])
                sampled = turn["choices"][0]["token_ids"]
                if ids[:start] != turn["prompt_token_ids"] or ids[start : start + len(sampled)] != sampled:
                    continue
                at = start - len(segment["prompt_ids"])
                expected = [x["logprob"] for x in turn["choices"][0]["logprobs"]["content"]]
                assert lps[at : at + len(sampled)].tolist() == pytest.approx(expected)
                covered[at : at + len(sampled)] = 1
            assert (covered == mask).all()  # the mask is exactly the sampled tokens, nothing else


def test_an_episode_that_never_called_the_policy_is_a_rollout_error(text_stack):
    with pytest.raises(RolloutError, match="never called the policy"):
        asyncio.run(_produce(text_stack, Silent()))
