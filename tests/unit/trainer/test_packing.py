import numpy as np
import pytest

from rlrun.runtime.trainer.packing import build_micro_batch, distribute
from rlrun.runtime.wire import EncodedTensor, MMRefs, TrainingSample, floats, ints, pack_floats, pack_ints


def _sample(prompt, completion, advantage=1.0, image=None, kwargs=False):
    refs = None
    if image is not None:
        refs = MMRefs(
            descriptor={
                "mm_hashes": {"image": [image]},
                "mm_items": {"image": [{"image_grid_thw": [[1, 2, 2]]}]},
            },
            uris=[f"file:///assets/{image}.png"],
        )
    mm_kwargs = {"pixel_values": EncodedTensor.from_array(np.ones((4, 3), np.float32))} if kwargs else None
    return TrainingSample(
        prompt_ids=pack_ints(prompt),
        completion_ids=pack_ints(completion),
        completion_logprobs=pack_floats([-0.1 * (i + 1) for i in range(len(completion))]),
        advantage=advantage,
        reward=1.0,
        mm_refs=refs,
        mm_kwargs=mm_kwargs,
    )


def test_micro_batch_rows_are_right_padded_with_completion_masks():
    mb = build_micro_batch([_sample([1, 2], [3], advantage=0.5), _sample([4], [5, 6], advantage=-1.0)])
    assert (mb.rows, mb.seq_len, mb.num_samples) == (2, 3, 2)
    assert ints(mb.input_ids).reshape(2, 3).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert np.frombuffer(mb.loss_mask, np.uint8).reshape(2, 3).tolist() == [[0, 0, 1], [0, 1, 1]]
    assert floats(mb.advantages).reshape(2, 3).tolist() == [[0, 0, 0.5], [0, -1, -1]]
    lp = floats(mb.inference_logprobs).reshape(2, 3)
    assert lp[1, 1:].tolist() == pytest.approx([-0.1, -0.2]) and lp[0, 2] == pytest.approx(-0.1)
    short = build_micro_batch([_sample([1], [2]), _sample([1, 2, 3], [4])])
    assert np.frombuffer(short.attention_mask, np.uint8).reshape(2, 4).sum(axis=1).tolist() == [2, 4]


def test_refs_of_a_micro_batch_are_concatenated_in_sample_order():
    mb = build_micro_batch([_sample([1], [2], image="a"), _sample([1], [2], image="b")])
    assert mb.mm_refs.uris == ["file:///assets/a.png", "file:///assets/b.png"]
    assert mb.mm_refs.descriptor["mm_hashes"]["image"] == ["a", "b"]
    assert len(mb.mm_refs.descriptor["mm_items"]["image"]) == 2 and mb.mm_kwargs is None


def test_every_rank_gets_the_same_count_and_modality_with_zero_loss_dummies():
    samples = [_sample([1], [2], image=str(i)) for i in range(3)] + [_sample([1, 2], [3])]
    grid = distribute(samples, micro_batch_size=1, world_size=2)
    assert [len(g) for g in grid] == [3, 3]
    for index in range(3):
        assert grid[0][index].is_multimodal == grid[1][index].is_multimodal
    flat = [mb for rank in grid for mb in rank]
    assert sum(mb.num_samples for mb in flat) == 4
    dummies = [mb for mb in flat if mb.num_samples == 0]
    assert len(dummies) == 2
    for dummy in dummies:
        assert not np.frombuffer(dummy.loss_mask, np.uint8).any() and not floats(dummy.advantages).any()
    assert any(d.mm_refs is not None for d in dummies), "the multimodal dummy keeps its refs"


def test_sidecar_kinds_never_share_a_micro_batch():
    samples = [_sample([1], [2], image="a"), _sample([1], [2], kwargs=True), _sample([1], [2])]
    (only_rank,) = distribute(samples, micro_batch_size=8, world_size=1)
    assert [(mb.mm_refs is not None, mb.mm_kwargs is not None) for mb in only_rank] == [
        (True, False),
        (False, True),
        (False, False),
    ]


def test_empty_step_gives_every_rank_nothing():
    assert distribute([], micro_batch_size=4, world_size=2) == [[], []]
