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
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from rlrun.runtime.assets import offload_images
from rlrun.runtime.config import DEFAULT_MAX_IMAGE_PIXELS
from rlrun.runtime.envs.agent_proxy import AgentProxy, Episode
from rlrun.runtime.envs.base import AgentEnvironment, Environment, Example, MultiTurnEnvironment
from rlrun.runtime.envs.trajectory import Turn, stitch
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
        self.urls = [u.rstrip("/") for u in inference_urls]
        self._turn = itertools.count()
        self.executor = ThreadPoolExecutor(max_workers=cpu_workers, thread_name_prefix="env")
        self.proxy = AgentProxy(self._agent_sample) if isinstance(env, AgentEnvironment) else None

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
        return self._describe(prepared.example.example_id, prepared.uris, prompt_ids)

    def _describe(self, example_id: str, uris: list[str], ids: list[int]) -> dict[str, Any] | None:
        """Descriptor + refs of the images whose tokens `ids` hold (in conversation order)."""
        if not uris:
            return None
        placeholders = image_placeholders(ids, self.image_token_id)
        try:
            descriptor = describe_images(
                self.image_processor, uris, placeholders=placeholders, max_pixels=self.max_image_pixels
            )
        except ValueError as err:
            raise RolloutError(f"{example_id}: inference rendered images inconsistently: {err}") from None
        return {"descriptor": descriptor, "uris": uris}

    def unknown_urls(self, urls: Sequence[str]) -> list[str]:
        return [u for u in urls if u.rstrip("/") not in self.urls]

    def _order(self, urls: Sequence[str] | None) -> list[str]:
        """`urls` (default: every replica) starting at the next replica in round-robin order."""
        chosen = [u.rstrip("/") for u in urls] if urls else self.urls
        first = next(self._turn) % len(chosen)
        return chosen[first:] + chosen[:first]

    async def _sample(
        self,
        messages: list[dict[str, Any]],
        n: int,
        sampling: Sampling,
        min_policy_version: int,
        inference_urls: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """`n` completions of `messages` from a replica of `inference_urls` (the orchestrator's in-sync
        replicas; default all) serving policy `min_policy_version` or newer: a completion from an older
        policy (a replica that lost a reload since the orchestrator looked) is dropped and the request asked
        of the next replica; when none is current, RolloutError names each replica's version."""
        body = {
            "model": self.model_name,
            "messages": messages,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": sampling.seed,
            "logprobs": True,
            "return_token_ids": True,  # vLLM's switch for prompt/completion token ids; the CPU engine always sends them
            "bad_words": list(RENDERER_ONLY_TOKENS),  # vLLM's; the CPU engine bans these by itself
        }
        stale: dict[str, int] = {}
        for url in self._order(inference_urls):
            out = await self._complete(url, body)
            if int(out["rlrun_policy_version"]) >= min_policy_version:
                break
            stale[url] = int(out["rlrun_policy_version"])
        else:
            raise RolloutError(
                f"no inference replica serves policy version >= {min_policy_version} "
                f"(maxAsyncSteps allows no older): {stale}"
            )
        if len(out["choices"]) != n:
            raise RolloutError(f"inference {url} returned {len(out['choices'])} choices, asked for {n}")
        return out

    async def rollouts(
        self,
        example_index: int,
        group_size: int,
        sampling: Sampling,
        min_policy_version: int = 0,
        inference_urls: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """A scored group of rollouts of example `example_index`, all from policy `min_policy_version` or
        newer, from the replicas `inference_urls` (default all)."""
        if self.proxy is not None:
            plays = (
                self._play(example_index, i, sampling, min_policy_version, inference_urls)
                for i in range(group_size)
            )
            return list(await asyncio.gather(*plays))
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self.executor, self.prepare, example_index)
        out = await self._sample(prepared.messages, group_size, sampling, min_policy_version, inference_urls)
        if isinstance(self.env, MultiTurnEnvironment):
            episodes = (
                self._episode(prepared, out, i, sampling, min_policy_version, inference_urls)
                for i in range(group_size)
            )
            return list(await asyncio.gather(*episodes))
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
                    "completion_logprobs": _logprobs(choice),
                    "reward": float(self.env.reward(example, text)),
                    "policy_version": int(out["rlrun_policy_version"]),
                    "finish_reason": choice["finish_reason"],
                    "mm": mm,
                }
            )
        return rollouts

    def _respond(self, example: Example, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """The environment's reply with its images offloaded (worker thread: CPU and disk)."""
        reply = self.env.respond(example, messages)  # type: ignore[attr-defined]
        if reply is None:
            return None
        result = offload_images(
            reply, self.images_dir, source_roots=self.source_roots, max_pixels=self.max_image_pixels
        )
        if result.errors:
            detail = "; ".join(f"{e.where} ({e.url}): {e.reason}" for e in result.errors)
            raise RolloutError(f"{example.example_id}: environment reply image(s) refused: {detail}")
        return list(result.value)

    async def _episode(
        self,
        prepared: Prepared,
        first: dict[str, Any],
        index: int,
        sampling: Sampling,
        min_version: int,
        inference_urls: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """One multi-turn rollout, from choice `index` of the group's first completion (see trajectory.py)."""
        loop = asyncio.get_running_loop()
        example, env = prepared.example, self.env
        messages, out, choice = list(prepared.messages), first, first["choices"][index]
        turns: list[Turn] = []
        turn_uris: list[list[str]] = []  # images of what each turn's request showed the policy
        versions: list[int] = []
        while True:
            turns.append(Turn(out["prompt_token_ids"], choice["token_ids"], _logprobs(choice)))
            turn_uris.append(image_uris(messages))
            versions.append(int(out["rlrun_policy_version"]))
            messages = [*messages, {"role": "assistant", "content": choice["message"]["content"] or ""}]
            if len(turns) >= env.max_turns:  # type: ignore[attr-defined]
                break
            reply = await loop.run_in_executor(self.executor, self._respond, example, messages)
            if not reply:
                break
            messages = [*messages, *reply]
            seed = None if sampling.seed is None else (sampling.seed + 7919 * len(turns) + index) % (1 << 31)
            out = await self._sample(messages, 1, replace(sampling, seed=seed), min_version, inference_urls)
            choice = out["choices"][0]
        samples, turns_done = [], 0
        for segment in stitch(turns):
            turns_done += segment.turns  # the segment's images: all the request of its last turn showed
            uris = turn_uris[turns_done - 1]
            mm = await loop.run_in_executor(
                self.executor, self._describe, example.example_id, uris, segment.ids
            )
            fields = {k: v for k, v in asdict(segment).items() if k != "turns"}
            samples.append({**fields, "mm": mm})
        reward = await loop.run_in_executor(self.executor, env.score, example, messages)  # type: ignore[attr-defined]
        return {
            "example_id": example.example_id,
            "env": env.id,
            "prompt": messages[:-1],
            "completion": messages[-1]["content"],
            "segments": samples,
            "turns": len(turns),
            "reward": float(reward),
            "policy_version": min(versions),
            "finish_reason": choice["finish_reason"],
            "mm": None,
        }

    async def _agent_sample(self, messages: list[dict[str, Any]], episode: Episode) -> dict[str, Any]:
        """A turn of an agent environment's episode, asked through the proxy (one completion)."""
        sampling, min_version, urls = episode.context
        turn = len(episode.turns)
        seed = None if sampling.seed is None else (sampling.seed + 7919 * turn + episode.index) % (1 << 31)
        return await self._sample(messages, 1, replace(sampling, seed=seed), min_version, urls)

    async def _play(
        self,
        example_index: int,
        index: int,
        sampling: Sampling,
        min_version: int,
        inference_urls: Sequence[str] | None,
    ) -> dict[str, Any]:
        """One episode of an agent environment: it plays through the proxy, which records the tokens."""
        assert self.proxy is not None and isinstance(self.env, AgentEnvironment)
        base_url = await self.proxy.start()
        key = f"rlrun-episode-{uuid.uuid4().hex}"
        episode = self.proxy.episodes[key] = Episode(index, context=(sampling, min_version, inference_urls))
        try:
            played = await self.env.play(example_index, base_url, key)
        except Exception as err:
            raise RolloutError(f"{self.env.id}: episode of example {example_index} failed: {err}") from err
        finally:
            del self.proxy.episodes[key]
        if not episode.turns:
            raise RolloutError(f"{self.env.id}: episode of example {example_index} never called the policy")
        segments = [
            {**{k: v for k, v in asdict(segment).items() if k != "turns"}, "mm": None}
            for segment in stitch(episode.turns)
        ]
        last = next((m for m in reversed(played.messages) if m.get("role") == "assistant"), {})
        return {
            "example_id": played.example_id,
            "env": self.env.id,
            "prompt": played.messages[:-1],
            "completion": last.get("content") or "",
            "segments": segments,
            "turns": len(episode.turns),
            "reward": float(played.reward),
            "policy_version": min(episode.versions),
            "finish_reason": episode.finish_reason,
            "mm": None,
        }

    async def _complete(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self.client.post(f"{url}/v1/chat/completions", json=body)
        except httpx.HTTPError as err:
            raise RolloutError(f"inference {url} unreachable: {type(err).__name__}: {err}") from None
        if response.status_code != 200:
            raise RolloutError(f"inference {url} answered HTTP {response.status_code}: {response.text[:500]}")
        return response.json()

    async def aclose(self) -> None:
        """Stop the agent proxy and what the environment started, then the worker threads."""
        if self.proxy is not None:
            await self.proxy.close()
            await self.env.aclose()  # type: ignore[attr-defined]
        self.close()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _logprobs(choice: dict[str, Any]) -> list[float]:
    return [c["logprob"] for c in choice["logprobs"]["content"]]


def image_token_id(model_dir: Path | str) -> int:
    """The model's <|image_pad|> id, from config.json (local dirs) or the hub config."""
    path = Path(model_dir) / "config.json"
    if path.is_file():
        return int(json.loads(path.read_text())["image_token_id"])
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(model_dir).image_token_id)
