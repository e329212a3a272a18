"""Rollouts made the way the env-worker makes them: its `RolloutWorker` against a stack's real inference
server (the stacks of tests/unit/envs/conftest.py), returned as the orchestrator receives them (a JSON round trip), with
every chat completion inference answered on the way (what the samples' tokens and logprobs must match)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

import httpx
from PIL import Image

from rlrun.runtime.envs.builtin.calculator import Calculator
from rlrun.runtime.envs.worker import RolloutWorker, Sampling, image_token_id
from rlrun.runtime.mm import load_image_processor


async def produce(
    stack: Any, env: Any, groups: Sequence[tuple[int, Sampling]], group_size: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rollouts of every group, in order; the chat completions inference answered) for `groups`, each an
    (example index, sampling) pair of `group_size` rollouts."""
    model = stack.config.model.name
    answered: list[dict[str, Any]] = []

    async def record(response: httpx.Response) -> None:
        if response.request.url.path == "/v1/chat/completions":
            await response.aread()
            answered.append(response.json())

    async with httpx.AsyncClient(timeout=120, event_hooks={"response": [record]}) as client:
        worker = RolloutWorker(
            env,
            [stack.inference_url],
            client,
            stack.images_dir,
            load_image_processor(model),
            image_token_id(model),
        )
        try:
            made = [await worker.rollouts(index, group_size, sampling) for index, sampling in groups]
        finally:
            await worker.aclose()
    return json.loads(json.dumps([r for group in made for r in group])), answered


class PictureCalculator(Calculator):
    """The calculator whose first tool reply carries an image; rewards vary within a group."""

    id = "picture-calculator"

    def respond(self, example: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        reply = super().respond(example, messages)
        if reply is not None and sum(m["role"] == "assistant" for m in messages) == 1:
            picture = {"type": "image", "image": Image.new("RGB", (32, 32), (200, 30, 30))}
            reply = [{"role": "tool", "content": [{"type": "text", "text": reply[0]["content"]}, picture]}]
        return reply

    def score(self, example: Any, messages: list[dict[str, Any]]) -> float:
        return float(zlib.crc32(json.dumps(messages).encode()) % 2)
