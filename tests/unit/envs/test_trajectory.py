"""Multi-turn token bookkeeping (pure): turns merge into one sample while each prompt extends the sequence
before it, else a new sample starts; the mask covers exactly the sampled tokens with their logprobs."""

import pytest

from rlrun.runtime.envs.trajectory import Turn, stitch


def test_turns_whose_prompts_extend_the_trajectory_make_one_sample_with_env_tokens_as_context():
    first = Turn([1, 2, 3], [10, 11, 99], [-0.1, -0.2, -0.3])  # 99: the stop token was sampled
    second = Turn([1, 2, 3, 10, 11, 99, 7, 8, 9], [12, 13], [-0.4, -0.5])  # 7 8 9: env message + header
    [segment] = stitch([first, second])
    assert segment.prompt_ids == [1, 2, 3]
    assert segment.completion_ids == [10, 11, 99, 7, 8, 9, 12, 13]
    assert segment.completion_mask == [1, 1, 1, 0, 0, 0, 1, 1]
    assert segment.completion_logprobs == pytest.approx([-0.1, -0.2, -0.3, 0, 0, 0, -0.4, -0.5])
    assert segment.turns == 2


def test_a_prompt_that_re_tokenized_an_earlier_turn_starts_a_new_exact_sample():
    first = Turn([1, 2], [10, 11], [-0.1, -0.2])
    retokenized = Turn([1, 2, 55, 7], [12], [-0.3])  # 10 11 came back as 55: not what was sampled
    third = Turn([1, 2, 55, 7, 12, 8], [13], [-0.6])
    a, b = stitch([first, retokenized, third])
    assert (a.prompt_ids, a.completion_ids, a.completion_mask, a.turns) == ([1, 2], [10, 11], [1, 1], 1)
    assert (b.prompt_ids, b.completion_ids, b.completion_mask) == ([1, 2, 55, 7], [12, 8, 13], [1, 0, 1])
    assert b.completion_logprobs == pytest.approx([-0.3, 0.0, -0.6]) and b.turns == 2


def test_ids_and_logprobs_of_a_turn_must_pair_up():
    with pytest.raises(ValueError, match="2 completion ids but 1 logprobs"):
        stitch([Turn([1], [2, 3], [-0.1])])
