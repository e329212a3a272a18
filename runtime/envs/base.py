"""The `Environment` interface: what an environment must provide for the env-worker to run rollouts.

An environment is pure: it makes examples (messages + the answer) and scores completions. It never talks
to inference or touches the asset tree; the env-worker does both, so every environment gets image
offload, refs and token bookkeeping for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Example:
    """One prompt. `messages` are OpenAI-format; images may be inline (`{"type": "image", "image": PIL}`),
    the env-worker offloads them to content-addressed files before anything leaves the process."""

    example_id: str
    messages: list[dict[str, Any]]
    answer: str


class Environment(ABC):
    """Examples are indexed 0..len-1; any integer index is taken modulo len, so callers may sample freely."""

    id: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def make_example(self, index: int) -> Example:
        """Example `index` (0 <= index < len)."""

    @abstractmethod
    def reward(self, example: Example, completion: str) -> float:
        """Score in [0, 1] for `completion` (the decoded assistant text) on `example`."""

    def example(self, index: int) -> Example:
        return self.make_example(index % len(self))


class MultiTurnEnvironment(Environment):
    """An episode of several assistant turns: tool calls and their results, feedback, images in later turns.

    After each assistant turn the env-worker calls `respond` with the conversation so far (ending with that
    assistant message) and sends what it returns (OpenAI-format messages: `tool` results, `user` feedback,
    inline images as in examples) together with the conversation back to inference; `None` ends the episode,
    as does reaching `max_turns` assistant turns. Only the tokens the policy sampled are trained on: the
    environment's messages are context. `score` rewards the whole conversation.
    """

    max_turns: int = 4

    @abstractmethod
    def respond(self, example: Example, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """The environment's next messages after the assistant's last one, or None when the episode is over."""

    def score(self, example: Example, messages: list[dict[str, Any]]) -> float:
        """Score in [0, 1] of the finished conversation; by default `reward` of the last assistant message."""
        last = next(m for m in reversed(messages) if m.get("role") == "assistant")
        return self.reward(example, last.get("content") or "")


@dataclass(frozen=True)
class AgentEpisode:
    """What an agent environment reports of one episode; the tokens come from the env-worker's recording."""

    example_id: str
    messages: list[dict[str, Any]]
    reward: float


class AgentEnvironment(Environment):
    """An environment that plays whole episodes itself (a framework with its own agent loop, e.g. verifiers),
    calling the OpenAI-compatible `base_url` the env-worker gives it, as model `model`.

    The env-worker serves that URL on loopback: every call goes to rlrun's inference with the run's sampling
    and its prompt and sampled token ids and logprobs are recorded under `model`, so the samples are exact
    (trajectory.py) whatever the framework does with the text. `reward` is not used: `play` scores.
    """

    @abstractmethod
    async def play(self, index: int, base_url: str, model: str) -> AgentEpisode:
        """One episode of example `index` (any integer, taken modulo len), scored by the environment."""

    def make_example(self, index: int) -> Example:
        raise TypeError(f"{type(self).__name__} makes its own prompts in play()")

    def reward(self, example: Example, completion: str) -> float:
        raise TypeError(f"{type(self).__name__} scores whole episodes in play(), not completions")

    async def aclose(self) -> None:
        """Stop what `play` started (the env-worker calls it on shutdown)."""
