"""Multi-turn requests on both engines: a conversation with an assistant turn, a `tool` reply (no OpenAI
tool_call_id: environments speak plain messages) and a later-turn image renders exactly as rlrun's renderer
renders it, and the next turn's prompt extends the previous turn's prompt + sampled ids token for token
whenever the sampled ids re-encode to themselves (what envs/trajectory.py relies on to merge turns)."""

from __future__ import annotations

import httpx
from transformers import AutoImageProcessor, AutoTokenizer

from rlrun.runtime.envs.trajectory import Turn, stitch
from rlrun.runtime.models.chat import RENDERER_ONLY_TOKENS, render_prompt

BODY = {"max_tokens": 4, "temperature": 0.0, "seed": 3, "logprobs": True, "return_token_ids": True,
        "bad_words": list(RENDERER_ONLY_TOKENS)}  # fmt: skip


def _complete(server, tree, messages):
    body = {**BODY, "model": tree.config.model.name, "messages": messages}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def test_a_tool_turn_with_an_image_renders_like_rlrun_and_extends_the_prompt(engine, tree) -> None:
    tokenizer, processor = (
        AutoTokenizer.from_pretrained(tree.model_dir),
        AutoImageProcessor.from_pretrained(tree.model_dir),
    )
    first = [{"role": "user", "content": "3*4+1=?"}]
    out = _complete(engine, tree, first)
    [choice] = out["choices"]
    assistant = {"role": "assistant", "content": "alpha 3*4"}  # a turn whose text re-encodes to itself
    tool = {"role": "tool", "content": [{"type": "text", "text": "12"},
                                        {"type": "image_url", "image_url": {"url": tree.images["blue"]}}]}  # fmt: skip
    second = [*first, assistant, tool]
    out2 = _complete(engine, tree, second)
    assert out2["prompt_token_ids"] == render_prompt(second, tokenizer, processor)[0]
    sampled = tokenizer.encode("alpha 3*4", add_special_tokens=False)
    turns = [Turn(out["prompt_token_ids"], sampled, [-1.0] * len(sampled)),
             Turn(out2["prompt_token_ids"], out2["choices"][0]["token_ids"],
                  [c["logprob"] for c in out2["choices"][0]["logprobs"]["content"]])]  # fmt: skip
    [segment] = stitch(turns)  # one sample: the second prompt extends the first prompt + its tokens
    assert segment.turns == 2 and choice["finish_reason"] in {"stop", "length"}
