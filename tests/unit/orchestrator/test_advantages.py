import pytest

from rlrun.runtime.orchestrator.advantages import group_advantages, is_degenerate, score_groups
from rlrun.runtime.orchestrator.loop import example_indices
from rlrun.runtime.orchestrator.samples import policy_lag, strip_token_arrays, to_training_sample
from rlrun.runtime.wire import floats, ints


def test_group_advantages_are_standardized_rewards():
    assert group_advantages([1.0, 0.0, 0.0, 1.0]) == pytest.approx([1.0, -1.0, -1.0, 1.0], rel=1e-5)
    # One success in four: mean 0.25, std sqrt(3)/4, so the lone success weighs sqrt(3), each miss 1/sqrt(3).
    assert group_advantages([1.0, 0.0, 0.0, 0.0]) == pytest.approx(
        [3**0.5, -(3**-0.5)] + [-(3**-0.5)] * 2, rel=1e-5
    )
    assert sum(group_advantages([0.2, 0.9, 0.4])) == pytest.approx(0.0, abs=1e-9)


def test_rare_successes_weigh_as_much_as_common_ones():
    """Why std division: a group right 1 time in 8 pushes as hard per success as one right 4 times in 8."""
    rare, even = group_advantages([1.0] + [0.0] * 7), group_advantages([1.0] * 4 + [0.0] * 4)
    assert rare[0] == pytest.approx(7**0.5, rel=1e-5) and even[0] == pytest.approx(1.0, rel=1e-5)
    assert group_advantages([0.5, 0.5]) == [0.0, 0.0]  # degenerate: no signal, no division blow-up


def test_score_groups_drops_degenerate_groups_only():
    advantages, keep = score_groups([1, 1, 0, 1, 0, 0], group_size=2)
    assert advantages == pytest.approx([0.0, 0.0, -1.0, 1.0, 0.0, 0.0], rel=1e-5)
    assert keep == [False, False, True, True, False, False]
    assert is_degenerate([0.3, 0.3]) and not is_degenerate([0.3, 0.4])


def test_score_groups_rejects_a_partial_group():
    with pytest.raises(ValueError, match="5 rewards cannot be split into groups of 2"):
        score_groups([1, 0, 1, 0, 1], group_size=2)


def _rollout(**overrides):
    rollout = {
        "example_id": "ex-1",
        "env": "color-codeword",
        "prompt": [{"role": "user", "content": "hi"}],
        "completion": "x",
        "prompt_ids": [1, 2, 3],
        "completion_ids": [4, 5],
        "completion_logprobs": [-0.5, -1.5],
        "reward": 1.0,
        "policy_version": 3,
        "mm": {"descriptor": {"mm_hashes": {"image": ["h"]}}, "uris": ["file:///a.png"]},
    }
    rollout.update(overrides)
    return rollout


def test_training_sample_packs_tokens_and_keeps_refs_not_pixels():
    sample = to_training_sample(_rollout(), advantage=0.25)
    assert ints(sample.prompt_ids).tolist() == [1, 2, 3]
    assert ints(sample.completion_ids).tolist() == [4, 5]
    assert floats(sample.completion_logprobs).tolist() == [-0.5, -1.5]
    assert sample.mm_refs is not None and sample.mm_refs.uris == ["file:///a.png"]
    assert sample.mm_kwargs is None and sample.policy_version == 3 and sample.advantage == 0.25


def test_training_sample_rejects_misaligned_logprobs():
    with pytest.raises(ValueError, match="2 completion ids but 1 logprobs"):
        to_training_sample(_rollout(completion_logprobs=[-1.0]), advantage=0.0)


def test_strip_keeps_counts_and_what_sample_logging_needs():
    rollout = strip_token_arrays(_rollout(), advantage=-0.5)
    assert "prompt_ids" not in rollout and "completion_ids" not in rollout
    assert "completion_logprobs" not in rollout
    assert rollout["num_prompt_tokens"] == 3 and rollout["num_completion_tokens"] == 2
    assert rollout["advantage"] == -0.5
    assert rollout["prompt"] and rollout["completion"] == "x" and rollout["mm"]["uris"]


def test_policy_lag_is_measured_from_the_oldest_rollout():
    assert policy_lag(5, [_rollout(policy_version=4), _rollout(policy_version=2)]) == 3
    assert policy_lag(5, []) == 0


def test_each_step_covers_the_dataset_evenly_and_steps_continue_the_walk():
    dataset = 4  # the colour task's 4 colours; environments take indices modulo their length
    for step in range(3):
        indices = example_indices(step, groups=16)
        assert sorted(i % dataset for i in indices) == sorted(list(range(dataset)) * 4)
    assert example_indices(1, groups=3) == [3, 4, 5] and example_indices(2, groups=3)[0] == 6
