"""One inference contract, two engines, checked with the official `openai` client.

Every test here runs against real vLLM (CPU build) and the rlrun CPU engine, serving the same model dir
from the same run tree. What env-workers and the trainer rely on: the model list, chat completions with
`file://` images from the asset tree, prompt and completion token ids, logprobs of the sampled
distribution (after temperature), the policy version, refusal of images outside the asset root, and a
stream that either streams or is refused with a 400 (never an empty 200).
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
import torch

from rlrun.runtime.mm import mm_token_type_ids
from rlrun.runtime.models.chat import RENDERER_ONLY_TOKENS, render_prompt

# The first test also waits for the session's servers (vLLM: 2-5 min, more on a loaded machine).
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1500)]

# What the env-worker adds: `return_token_ids` (vLLM needs it; the CPU engine always returns them) and
# `bad_words` (vLLM bans sampling the renderer's tokens; the CPU engine bans them by itself).
EXTRA = {"return_token_ids": True, "bad_words": list(RENDERER_ONLY_TOKENS)}


def _client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _messages(url: str, text: str = "What is the codeword for this colour?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
        }
    ]


@pytest.fixture(scope="module")
def reference(tree):
    """The model as the trainer loads it (transformers, float32), to recompute what engines report."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(tree.model_dir, dtype=torch.float32).eval()
    return (
        model,
        AutoTokenizer.from_pretrained(tree.model_dir),
        AutoImageProcessor.from_pretrained(tree.model_dir),
    )


def _recomputed_logprobs(reference, messages, completion_ids, temperature: float) -> torch.Tensor:
    model, tokenizer, processor = reference
    prompt_ids, images = render_prompt(messages, tokenizer, processor)
    full = torch.tensor([prompt_ids + completion_ids])
    with torch.inference_mode():
        logits = model(
            input_ids=full,
            mm_token_type_ids=mm_token_type_ids(full, model.config.image_token_id),
            **processor(images=images, return_tensors="pt"),
        ).logits[0, len(prompt_ids) - 1 : -1]
    scaled = logits.float() / (temperature or 1.0)
    return torch.log_softmax(scaled, -1)[torch.arange(len(completion_ids)), completion_ids]


def test_models_lists_the_served_model(engine, tree) -> None:
    assert [m.id for m in _client(engine).models.list().data] == [tree.config.model.name]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_chat_completion_with_a_file_image(engine, tree, reference, temperature) -> None:
    messages = _messages(tree.images["red"])
    out = _client(engine).chat.completions.create(
        model=tree.config.model.name,
        messages=messages,
        max_tokens=4,
        temperature=temperature,
        seed=7,
        logprobs=True,
        extra_body=EXTRA,
    )
    # Both engines render the prompt exactly as rlrun's renderer does (the trainer re-renders nothing:
    # it trains on these ids, so they must mean what the policy saw).
    prompt_ids, _ = render_prompt(messages, reference[1], reference[2])
    assert out.model_extra["prompt_token_ids"] == prompt_ids
    assert isinstance(out.model_extra["rlrun_policy_version"], int)
    choice = out.choices[0]
    ids = choice.model_extra["token_ids"]
    assert 1 <= len(ids) <= 4 and len(choice.logprobs.content) == len(ids)
    # Logprobs of the distribution the token was sampled from: log_softmax(logits / T).
    got = torch.tensor([c.logprob for c in choice.logprobs.content])
    expected = _recomputed_logprobs(reference, messages, ids, temperature)
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)


def test_image_outside_the_asset_root_is_refused(engine, tree, tmp_path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes((tree.run_dir / "assets" / "images" / "red.png").read_bytes())
    with pytest.raises(openai.BadRequestError):
        _client(engine).chat.completions.create(
            model=tree.config.model.name, messages=_messages(outside.as_uri()), max_tokens=2, extra_body=EXTRA
        )
    assert httpx.get(f"{engine.url}/health", timeout=30).status_code == 200


def test_streaming_streams_or_is_refused_with_a_400(engine, tree) -> None:
    request = dict(
        model=tree.config.model.name,
        messages=[{"role": "user", "content": "Name the codeword."}],
        max_tokens=3,
        stream=True,
    )
    if engine.name == "rlrun":
        with pytest.raises(openai.BadRequestError, match="stream=true is not supported"):
            _client(engine).chat.completions.create(**request)
        return
    chunks = list(_client(engine).chat.completions.create(**request))
    assert chunks and any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_a_rollout_steps_worth_of_seeded_group_requests_at_once(engine, tree) -> None:
    """What env-workers send each step: 16 groups of n=8, seeded, concurrently (128 sequences). On vLLM's
    CPU build with its default token budget this killed the engine (a seeded request prefilled in parts)."""

    async def step() -> list[int]:
        client = openai.AsyncOpenAI(base_url=f"{engine.url}/v1", api_key="unused", max_retries=0, timeout=600)
        colours = list(tree.images.values())
        outs = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=tree.config.model.name,
                    messages=_messages(colours[i % len(colours)]),
                    n=8,
                    max_tokens=8,
                    temperature=1.0,
                    seed=1000 + i,
                    logprobs=True,
                    extra_body=EXTRA,
                )
                for i in range(16)
            )
        )
        return [len(o.choices) for o in outs]

    assert asyncio.run(step()) == [8] * 16
    assert httpx.get(f"{engine.url}/health", timeout=30).status_code == 200


def test_both_engines_agree_on_greedy_tokens_and_logprobs(vllm_server, rlrun_server, tree) -> None:
    """The train/inference mismatch at its source: same prompt, same weights, two engines."""
    outs = {}
    for server in (vllm_server, rlrun_server):
        outs[server.name] = [
            _client(server).chat.completions.create(
                model=tree.config.model.name,
                messages=_messages(url),
                max_tokens=4,
                temperature=0.0,
                logprobs=True,
                extra_body=EXTRA,
            )
            for url in tree.images.values()
        ]
    deltas = []
    for v, r in zip(outs["vllm"], outs["rlrun"], strict=True):
        assert v.model_extra["prompt_token_ids"] == r.model_extra["prompt_token_ids"]
        assert v.choices[0].model_extra["token_ids"] == r.choices[0].model_extra["token_ids"]
        deltas += [
            abs(a.logprob - b.logprob)
            for a, b in zip(v.choices[0].logprobs.content, r.choices[0].logprobs.content, strict=True)
        ]
    mean = sum(deltas) / len(deltas)
    print(f"vLLM vs rlrun engine: mean |logprob delta| {mean:.2e} over {len(deltas)} tokens")
    assert mean < 2e-3
