"""Built-in environments: answers, rewards, argument checks (pure, no servers)."""

from __future__ import annotations

import pytest
from PIL import Image

from rlrun.runtime.envs.builtin.color_codeword import ColorCodeword
from rlrun.runtime.envs.builtin.text_reverse import TextReverse
from rlrun.runtime.envs.registry import make_environment
from rlrun.runtime.models.tiny import build_tokenizer


def test_color_examples_are_solid_images_with_distinct_codewords() -> None:
    env = ColorCodeword(num_colours=4)
    assert len(env) == 4 and env.example(5).example_id == env.example(1).example_id
    for i in range(4):
        image = env.example(i).messages[0]["content"][1]["image"]
        assert isinstance(image, Image.Image) and image.getextrema() == tuple(
            (c, c) for c in image.getpixel((0, 0))
        )
    assert len({env.example(i).answer for i in range(4)}) == 4
    assert (
        ColorCodeword(seed=1).codewords != ColorCodeword(seed=2).codewords or ColorCodeword(seed=3).codewords
    )


@pytest.mark.parametrize(
    ("completion", "reward"),
    [("ANSWER", 1.0), (" answer.", 1.0), ("answer extra", 1.0), ("answerx", 0.0), ("", 0.0)],
)
def test_color_reward_checks_the_first_word(completion: str, reward: float) -> None:
    env = ColorCodeword()
    example = env.example(0)
    assert (
        env.reward(
            example, completion.replace("ANSWER", example.answer.upper()).replace("answer", example.answer)
        )
        == reward
    )


def test_text_reverse_scores_positions() -> None:
    env = TextReverse(num_words=3, seed=1)
    example = env.example(7)
    words = example.answer.split()
    assert example.messages[0]["content"].endswith(" ".join(reversed(words)))
    assert env.reward(example, example.answer) == 1.0
    assert env.reward(example, " ".join(reversed(words))) == pytest.approx(1 / 3)  # middle word stays put
    assert env.reward(example, "") == 0.0
    assert env.example(7) == example  # deterministic


def test_answers_are_single_tokens_of_the_tiny_model() -> None:
    tokenizer = build_tokenizer()
    answers = {ColorCodeword(num_colours=10).example(i).answer for i in range(10)}
    answers |= set(TextReverse(vocabulary=16).words)
    for word in answers:
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word


def test_unknown_environments_and_bad_args_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown environment 'nope'"):
        make_environment("nope")
    with pytest.raises(
        ValueError, match=r"unknown args \['colours'\]; it takes \['image_size', 'num_colours'"
    ):
        make_environment("color-codeword", {"colours": 3})
    with pytest.raises(ValueError, match="num_colours: Input should be a valid integer"):
        make_environment("color-codeword", {"num_colours": "many"})
    with pytest.raises(ValueError, match=r"num_colours must be in 2\.\.10"):
        make_environment("color-codeword", {"num_colours": 11})
