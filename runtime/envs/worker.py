"""One rollout group: example -> offloaded refs -> chat completion (n = group size) -> scored rollouts.

Images are written to `<run_dir>/assets/images` (content-addressed) before the request leaves, so the
inference server, the orchestrator and the trainer all see the same `file://` refs and no base64 ever
travels past the env-worker. The descriptor (hash + grid + placeholder per image) is computed here from
the files, checked against the image tokens inference actually rendered.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rlrun.runtime.assets import offload_images
from rlrun.runtime.config import DEFAULT_MAX_IMAGE_PIXELS
from rlrun.runtime.envs.base import Environment, Example
from rlrun.runtime.mm import describe_images, image_placeholders, image_uris
from rlrun.runtime.models.chat import RENDERER_ONLY_TOKENS


class RolloutError(RuntimeError):
    """A group could not be produced (inference failed or answered inconsistently)."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    max_tokens: int = 8
    seed: int | None = None
    top_p: float = 1.0


@dataclass
class Prepared:
    """An example with its images offloaded: what is sent to inference and returned as `prompt`."""

    example: Example
    messages: list[dict[str, Any]]
    uris: list[str]


class RolloutWorker:
    """Runs rollout groups for one environment against one or more inference servers (round robin)."""

    def __init__(
        self,
        env: Environment,
        inference_urls: Sequence[str],
        client: httpx.AsyncClient,
        images_dir: Path,
        image_processor: Any,
        image_token_id: int,
        model_name: str = "",
        cpu_workers: int = 1,
        source_roots: Sequence[Path] = (),
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if not inference_urls:
            raise ValueError("env-worker needs at least one inference URL")
        self.env, self.client = env, client
        self.images_dir, self.image_processor, self.image_token_id = (
            images_dir,
            image_processor,
            image_token_id,
        )
        self.model_name = model_name
        self.source_roots = tuple(source_roots)  # where an environment's file:// images may come from
        self.max_image_pixels = max_image_pixels
        self._replicas = len(inference_urls)
        self._urls = itertools.cycle(list(inference_urls))
        self.executor = ThreadPoolExecutor(max_workers=cpu_workers, thread_name_prefix="env")

    def prepare(self, example_index: int) -> Prepared:
        """Make the example and offload its images (CPU and disk work: runs on the worker threads)."""
        example = self.env.example(example_index)
        result = offload_images(
            example.messages,
            self.images_dir,
            source_roots=self.source_roots,
            max_pixels=self.max_image_pixels,
        )
        if result.errors:
            detail = "; ".join(f"{e.where} ({e.url}): {e.reason}" for e in result.errors)
            raise RolloutError(f"{example.example_id}: image(s) refused: {detail}")
        return Prepared(example, result.value, image_uris(result.value))

    def describe(self, prepared: Prepared, prompt_ids: list[int]) -> dict[str, Any] | None:
        if not prepared.uris:
            return None
        placeholders = image_placeholders(prompt_ids, self.image_token_id)
        try:
            descriptor = describe_images(
                self.image_processor,
                prepared.uris,
                placeholders=placeholders,
                max_pixels=self.max_image_pixels,
            )
        except ValueError as err:
            raise RolloutError(
                f"{prepared.example.example_id}: inference rendered images inconsistently: {err}"
            ) from None
        return {"descriptor": descriptor, "uris": prepared.uris}

    async def rollouts(
        self, example_index: int, group_size: int, sampling: Sampling, min_policy_version: int = 0
    ) -> list[dict[str, Any]]:
        """A scored group from a replica serving policy `min_policy_version` or newer: a completion from
        an older policy (a restarted replica before its first reload) is dropped and the group asked of
        the next replica; when none is current, RolloutError names each replica's version."""
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self.executor, self.prepare, example_index)
        body = {
            "model": self.model_name,
            "messages": prepared.messages,
            "n": group_size,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.seed,
            "logprobs": True,
            "return_token_ids": True,  # vLLM's switch for prompt/completion token ids; the CPU engine always sends them
            "bad_words": list(RENDERER_ONLY_TOKENS),  # vLLM's; the CPU engine bans these by itself
        }
        stale: dict[str, int] = {}
        for _ in range(self._replicas):
            url = next(self._urls)
            out = await self._complete(url, body)
            if int(out["rlrun_policy_version"]) >= min_policy_version:
                break
            stale[url] = int(out["rlrun_policy_version"])
        else:
            raise RolloutError(
                f"no inference replica serves policy version >= {min_policy_version} "
                f"(maxAsyncSteps allows no older): {stale}"
            )
        if len(out["choices"]) != group_size:
            raise RolloutError(
                f"inference {url} returned {len(out['choices'])} choices, asked for {group_size}"
            )
        prompt_ids = out["prompt_token_ids"]
        mm = await loop.run_in_executor(self.executor, self.describe, prepared, prompt_ids)
        example = prepared.example
        rollouts = []
        for choice in out["choices"]:
            text = choice["message"]["content"] or ""
            rollouts.append(
                {
                    "example_id": example.example_id,
                    "env": self.env.id,
                    "prompt": prepared.messages,
                    "completion": text,
                    "prompt_ids": prompt_ids,
                    "completion_ids": choice["token_ids"],
                    "completion_logprobs": [c["logprob"] for c in choice["logprobs"]["content"]],
                    "reward": float(self.env.reward(example, text)),
                    "policy_version": int(out["rlrun_policy_version"]),
                    "finish_reason": choice["finish_reason"],
                    "mm": mm,
                }
            )
        return rollouts

    async def _complete(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.client.post(f"{url}/v1/chat/completions", json=body)
        except httpx.HTTPError as err:
            raise RolloutError(f"inference {url} unreachable: {type(err).__name__}: {err}") from None
        if response.status_code != 200:
            raise RolloutError(f"inference {url} answered HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def image_token_id(model_dir: Path | str) -> int:
    """The model's <|image_pad|> id, from config.json (local dirs) or the hub config."""
    path = Path(model_dir) / "config.json"
    if path.is_file():
        return int(json.loads(path.read_text())["image_token_id"])
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(model_dir).image_token_id)
