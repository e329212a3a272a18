"""The CPU engine speaks the OpenAI contract as the official `openai` client sees it (the same checks run
against real vLLM in tests/integration/vllm/test_contract.py)."""

from __future__ import annotations

import openai
import pytest
from PIL import Image


@pytest.fixture
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=60)


def _image_url(run_dir, color=(12, 200, 34)) -> str:
    path = run_dir / "assets" / "images" / "client.png"
    Image.new("RGB", (32, 32), color).save(path)
    return path.as_uri()


def test_models_lists_the_served_model(client, served) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [served.settings.model_name]


def test_chat_completion_carries_token_ids_logprobs_and_version(client, run_tree, served) -> None:
    out = client.chat.completions.create(
        model=served.settings.model_name,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _image_url(run_tree[1])}},
                    {"type": "text", "text": "Name the codeword."},
                ],
            }
        ],
        max_tokens=3,
        temperature=0.0,
        logprobs=True,
    )
    choice = out.choices[0]
    ids = choice.model_extra["token_ids"]
    assert 1 <= len(ids) <= 3 and len(choice.logprobs.content) == len(ids)
    assert all(lp.logprob <= 0 for lp in choice.logprobs.content)
    assert out.model_extra["prompt_token_ids"] and out.usage.prompt_tokens == len(
        out.model_extra["prompt_token_ids"]
    )
    assert out.model_extra["rlrun_policy_version"] == served.engine.version


def test_streaming_is_refused_with_a_clear_400(client, served) -> None:
    """Before: a 200 with zero chunks, indistinguishable from a model that said nothing."""
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=served.settings.model_name,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            stream=True,
        )
    assert "stream=true is not supported" in str(err.value)
