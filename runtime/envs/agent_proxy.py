"""The loopback OpenAI-compatible endpoint an agent environment's own agent loop calls (base.AgentEnvironment).

A framework such as verifiers plays its episodes itself and only needs a chat-completions URL. The env-worker
serves one on 127.0.0.1 (an ephemeral port, never another interface): each request names its episode by the
`model` field, a key the env-worker minted for that episode; the proxy sends the messages to rlrun's inference
with the run's sampling (the framework's own sampling fields are ignored: the policy samples as the run says)
and records the turn's prompt ids, sampled ids and logprobs, which become the episode's samples. The reply is
a plain chat completion, streamed as server-sent events when asked (verifiers' chat program streams).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from rlrun.runtime.envs.trajectory import Turn

# (messages, episode) -> inference's chat completion for them (one choice); raises to fail the request
Sample = Callable[[list[dict[str, Any]], "Episode"], Awaitable[dict[str, Any]]]


@dataclass
class Episode:
    """One agent episode's recording: every turn inference served it, in order."""

    index: int  # the episode's position in its group (it varies the seed)
    context: Any = None  # what the env-worker samples it with (sampling, policy version, replicas)
    turns: list[Turn] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    finish_reason: str = ""


class AgentProxy:
    """Serves POST /v1/chat/completions for the episodes registered in `episodes` (by key)."""

    def __init__(self, sample: Sample) -> None:
        self.sample = sample
        self.episodes: dict[str, Episode] = {}
        self._runner: web.AppRunner | None = None
        self._starting = asyncio.Lock()
        self.base_url = ""

    async def start(self) -> str:
        """The proxy's URL, serving from the first call on (concurrent first episodes wait for the same one)."""
        async with self._starting:
            if self._runner is None:
                app = web.Application()
                app.router.add_post("/v1/chat/completions", self._complete)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", 0).start()
                self._runner = runner
                self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body is not JSON")
        episode = self.episodes.get(str(body.get("model", "")))
        if episode is None:  # a finished episode's late call, or not one of ours
            return _error(404, f"no episode {body.get('model')!r} is in progress")
        if body.get("tools"):
            return _error(400, "tool definitions are not supported: rlrun's chat template renders none")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty list")
        try:
            out = await self.sample(messages, episode)
        except Exception as err:  # the agent sees a server error; the episode fails with it on our side too
            return _error(502, f"{type(err).__name__}: {err}")
        choice = out["choices"][0]
        episode.turns.append(
            Turn(
                out["prompt_token_ids"],
                choice["token_ids"],
                [c["logprob"] for c in choice["logprobs"]["content"]],
            )
        )
        episode.versions.append(int(out["rlrun_policy_version"]))
        episode.finish_reason = choice["finish_reason"]
        text = choice["message"]["content"] or ""
        usage = out.get("usage")
        if not body.get("stream"):
            return web.json_response(
                {
                    **_head(out),
                    "object": "chat.completion",
                    "usage": usage,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": choice["finish_reason"],
                        }
                    ],
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {**_head(out), "object": "chat.completion.chunk"}
        events = [
            {
                **chunk,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
                ],
            },
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        for event in events:
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _head(out: dict[str, Any]) -> dict[str, Any]:
    return {"id": out.get("id", "rlrun"), "created": out.get("created", 0), "model": out.get("model", "")}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=status)
