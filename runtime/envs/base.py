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
