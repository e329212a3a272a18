"""Token bookkeeping and the image token/feature tripwire, against a real tiny random Qwen2-VL."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from rlrun.runtime.assets import uri_to_path
from rlrun.runtime.mm import (
    Geometry,
    Materializer,
    check_image_tokens,
    collect_mm_refs,
    describe_images,
    image_placeholders,
    image_rows,
    image_token_count,
    mm_token_type_ids,
)

IMAGE, VIDEO, V_START, V_END, PAD = 290, 291, 292, 293, 0


@pytest.fixture(scope="module")
def model_config() -> Qwen2VLConfig:
    return Qwen2VLConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": 300,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]},
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        vision_config={
            "depth": 1,
            "embed_dim": 16,
            "hidden_size": 32,
            "num_heads": 1,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=IMAGE,
        video_token_id=VIDEO,
        vision_start_token_id=V_START,
        vision_end_token_id=V_END,
    )


@pytest.fixture(scope="module")
def model(model_config: Qwen2VLConfig) -> Qwen2VLForConditionalGeneration:
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(model_config).eval()


def row(images: list[int], text: int = 3) -> list[int]:
    """A prompt with each image's placeholder tokens between vision start/end markers, then some text."""
    ids = [5]
    for n in images:
        ids += [V_START] + [IMAGE] * n + [V_END]
    return ids + list(range(10, 10 + text))


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def test_mm_token_type_ids() -> None:
    ids = torch.tensor([[5, IMAGE, IMAGE, 7], [VIDEO, 1, IMAGE, PAD]])
    assert mm_token_type_ids(ids, IMAGE).tolist() == [[0, 1, 1, 0], [0, 0, 1, 0]]
    assert mm_token_type_ids(ids, IMAGE, VIDEO).tolist() == [[0, 1, 1, 0], [2, 0, 1, 0]]


def test_processor_must_match_the_vision_tower(processor, model_config) -> None:  # type: ignore[no-untyped-def]
    Geometry.of(processor).check_model(model_config)
    other = Qwen2VLConfig(vision_config={**model_config.vision_config.to_dict(), "spatial_merge_size": 4})
    with pytest.raises(ValueError, match=r"merge_size/spatial_merge_size: processor 2 != model 4"):
        Geometry.of(processor).check_model(other)


def test_materialized_refs_feed_the_model(processor, model, tree, kit) -> None:  # type: ignore[no-untyped-def]
    a = kit.stored_uri(tree, kit.make_image(1, (64, 64)), "PNG")  # grid [1, 4, 4] -> 4 tokens
    b = kit.stored_uri(tree, kit.make_image(2, (120, 40)), "JPEG")  # grid [1, 2, 8] -> 4 tokens
    merge = Geometry.of(processor).merge_size
    # two padded rows: row 0 shows a; row 1 shows b then a again (cumulative prompt)
    d0, d1 = describe_images(processor, [a]), describe_images(processor, [b, a])
    counts = [
        image_token_count(i["image_grid_thw"], merge)
        for i in d0["mm_items"]["image"] + d1["mm_items"]["image"]
    ]
    ids, mask = padded([row(counts[:1]), row(counts[1:])])
    assert image_placeholders(ids[1], IMAGE) == [[2, counts[1]], [4 + counts[1], counts[2]]]
    messages = [kit.user_turn(a), kit.user_turn(b, a)]
    refs = collect_mm_refs(
        {k: {"image": d0[k]["image"] + d1[k]["image"]} for k in ("mm_hashes", "mm_items")}, messages
    )
    with Materializer(processor, root=tree.run_dir) as materializer:
        images = materializer.materialize(refs)
    assert check_image_tokens(ids, IMAGE, images["pixel_values"], images["image_grid_thw"], merge) == sum(
        counts
    )
    assert image_rows(ids, IMAGE, images["image_grid_thw"], merge) == [0, 1, 1]
    out = model(
        input_ids=ids,
        attention_mask=mask,
        mm_token_type_ids=mm_token_type_ids(ids, IMAGE),
        labels=ids.masked_fill(mask == 0, -100),
        **images,
    )
    assert torch.isfinite(out.loss)


def test_one_extra_image_token_trips_before_the_forward(processor, tree, kit) -> None:  # type: ignore[no-untyped-def]
    uri = kit.stored_uri(tree, kit.make_image(1), "PNG")
    with Materializer(processor) as materializer:
        images = materializer.materialize(
            collect_mm_refs(describe_images(processor, [uri]), [kit.user_turn(uri)])
        )
    ids, _ = padded([row([5])])  # the image has 4 features
    with pytest.raises(ValueError) as err:
        check_image_tokens(ids, IMAGE, images["pixel_values"], images["image_grid_thw"], 2)
    message = str(err.value)
    assert "image token/feature mismatch" in message
    for part in (f"image_token_id={IMAGE}", "image_tokens=5", "image_features=4", "input_ids_shape=[1, 11]"):
        assert part in message
    assert "pixel_values_shape=[16, 1176]" in message and "image_grid_thw_shape=[1, 3]" in message
    with pytest.raises(ValueError, match="image_tokens=2, image_features=0"):
        check_image_tokens(torch.tensor([[IMAGE, IMAGE]]), IMAGE, None, None, 2)
    with pytest.raises(ValueError, match="pixel_values has 15 rows but image_grid_thw describes 16 patches"):
        check_image_tokens(ids, IMAGE, images["pixel_values"][:15], images["image_grid_thw"], 2)


def test_dropped_image_maps_to_the_row_whose_loss_is_zeroed(processor, model, tree, kit) -> None:  # type: ignore[no-untyped-def]
    a = kit.stored_uri(tree, kit.make_image(1), "PNG")
    b = kit.stored_uri(tree, kit.make_image(2), "PNG")
    refs = collect_mm_refs(describe_images(processor, [a, b]), [kit.user_turn(a), kit.user_turn(b)])
    uri_to_path(b).unlink()
    with Materializer(processor, missing_policy="drop", root=tree.run_dir) as materializer:
        images = materializer.materialize(refs)
    ids, mask = padded([row([4]), row([4])])
    rows = image_rows(ids, IMAGE, images["image_grid_thw"], 2)
    dropped_rows = {rows[slot] for slot in images.failed_slots}
    assert dropped_rows == {1}
    loss_mask = mask.clone()
    loss_mask[list(dropped_rows)] = 0
    out = model(input_ids=ids, attention_mask=mask, mm_token_type_ids=mm_token_type_ids(ids, IMAGE), **images)
    assert torch.isfinite(out.logits).all()  # zero pixels keep shapes consistent; the row trains nothing
    assert loss_mask[1].sum() == 0 and loss_mask[0].sum() > 0


def test_image_rows_refuses_an_image_split_across_rows() -> None:
    ids = torch.tensor([[IMAGE, IMAGE, 0], [IMAGE, IMAGE, 0]])
    with pytest.raises(ValueError, match="image slot 0 needs 4 image tokens but row 0 has only 2"):
        image_rows(ids, IMAGE, torch.tensor([[1, 4, 4]]), 2)
