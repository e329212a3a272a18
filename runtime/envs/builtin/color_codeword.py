"""`color-codeword`: a solid-colour image; the answer is the codeword assigned to that colour.

The prompt text is the same for every example, so the image is the only signal: a policy that ignores it
gives every example the same answer distribution and its expected reward is at most 1/num_colours. A
reward above that ceiling proves the image path (offload, refs, pixels, vision tower) works end to end.
"""

from __future__ import annotations

import random
import string

from PIL import Image

from rlrun.runtime.envs.base import Environment, Example

PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (230, 25, 25)),
    ("green", (25, 200, 40)),
    ("blue", (30, 60, 230)),
    ("black", (10, 10, 10)),  # before yellow: a random vision tower tells red from yellow poorly
    ("white", (245, 245, 245)),
    ("yellow", (240, 220, 20)),
    ("cyan", (20, 220, 220)),
    ("magenta", (220, 30, 200)),
    ("orange", (245, 140, 20)),
    ("purple", (120, 40, 170)),
)
CODEWORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett")
PROMPT = "Codeword?"


def first_word(text: str) -> str:
    words = text.strip().lower().split()
    return words[0].strip(string.punctuation) if words else ""


class ColorCodeword(Environment):
    id = "color-codeword"

    def __init__(self, num_colours: int = 4, image_size: int = 32, seed: int = 0) -> None:
        if not 2 <= num_colours <= len(PALETTE):
            raise ValueError(f"num_colours must be in 2..{len(PALETTE)}, got {num_colours}")
        if not 8 <= image_size <= 1024:
            raise ValueError(f"image_size must be in 8..1024, got {image_size}")
        self.colours = PALETTE[:num_colours]
        codewords = list(CODEWORDS[:num_colours])
        random.Random(seed).shuffle(codewords)  # the mapping is arbitrary: nothing to guess from names
        self.codewords = tuple(codewords)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.colours)

    def make_example(self, index: int) -> Example:
        name, rgb = self.colours[index]
        image = Image.new("RGB", (self.image_size, self.image_size), rgb)
        # Short text, image last: the answer position sits right after the image tokens, which a 2-layer
        # model needs to pick up the image signal (image first behind a long question plateaus at 0.5).
        content = [{"type": "text", "text": PROMPT}, {"type": "image", "image": image}]
        return Example(f"{self.id}-{name}", [{"role": "user", "content": content}], self.codewords[index])

    def reward(self, example: Example, completion: str) -> float:
        """1.0 when the first word of the completion is the codeword (case and punctuation ignored)."""
        return 1.0 if first_word(completion) == example.answer else 0.0
