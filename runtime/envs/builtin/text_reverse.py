"""`text-reverse`: a few codewords; the answer is the same words in reverse order (text only).

Words come from the NATO alphabet (one token each in the tiny model), so an answer of k words is about
2k-1 tokens. The reward is the fraction of positions right, a dense signal a tiny model can climb.
"""

from __future__ import annotations

import random

from rlrun.runtime.envs.base import Environment, Example

WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo",
    "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip


class TextReverse(Environment):
    id = "text-reverse"

    def __init__(
        self, num_words: int = 3, vocabulary: int = 8, num_examples: int = 1000, seed: int = 0
    ) -> None:
        if not 2 <= num_words <= 8:
            raise ValueError(f"num_words must be in 2..8, got {num_words}")
        if not num_words <= vocabulary <= len(WORDS):
            raise ValueError(f"vocabulary must be in {num_words}..{len(WORDS)}, got {vocabulary}")
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}")
        self.num_words, self.words, self.num_examples, self.seed = (
            num_words,
            WORDS[:vocabulary],
            num_examples,
            seed,
        )

    def __len__(self) -> int:
        return self.num_examples

    def make_example(self, index: int) -> Example:
        words = random.Random(f"{self.seed}:{index}").sample(self.words, self.num_words)
        text = f"Reverse the order of these words: {' '.join(words)}"
        return Example(f"{self.id}-{index}", [{"role": "user", "content": text}], " ".join(reversed(words)))

    def reward(self, example: Example, completion: str) -> float:
        want, got = example.answer.split(), completion.strip().lower().split()
        return sum(a == b for a, b in zip(want, got, strict=False)) / len(want)
