"""Descriptor-only multimodal data: building, validating, normalizing, and refs on the wire."""

from __future__ import annotations

import hashlib

import msgspec
import numpy as np
import pytest
import torch
from pydantic import BaseModel

from rlrun.runtime.assets import uri_to_path
from rlrun.runtime.mm import (
    collect_mm_refs,
    describe_images,
    image_placeholders,
    image_slots,
    image_token_count,
    image_uris,
    merge_mm_refs,
    normalize_descriptor,
)
from rlrun.runtime.wire import MicroBatch, MMRefs, TrainingSample, pack_floats, pack_ints


class Message(BaseModel):
    role: str
    content: list[dict]


def descriptor(hashes: list[str], grids: list[list[int]]) -> dict:
    return {
        "mm_hashes": {"image": hashes},
        "mm_items": {"image": [{"image_grid_thw": [g]} for g in grids]},
    }


def test_image_token_count() -> None:
    assert image_token_count([1, 4, 6], 2) == 6
    assert image_token_count([[1, 8, 8]], 2) == 16
    assert image_token_count(torch.tensor([[2, 4, 4]]), 2) == 8


def test_describe_images_from_every_source_without_pixels(processor, tree, kit) -> None:  # type: ignore[no-untyped-def]
    image = kit.make_image(3, (100, 60))
    png = kit.encode(image, "PNG")
    uri = kit.stored_uri(tree, image, "PNG")
    d = describe_images(
        processor, [uri, kit.data_url(png), png, image], placeholders=[[2, 8], [12, 8], [22, 8], [32, 8]]
    )
    content_hash = hashlib.sha256(png).hexdigest()[:16]
    assert d["mm_hashes"]["image"] == [content_hash] * 4
    assert uri_to_path(uri).stem == content_hash  # identity hash == content-addressed file name
    assert d["mm_items"]["image"] == [{"image_grid_thw": [[1, 4, 8]]}] * 4
    assert d["mm_placeholders"]["image"] == [[2, 8], [12, 8], [22, 8], [32, 8]]
    assert "pixel_values" not in str(d)
    msgspec.msgpack.encode(d)  # bare msgspec accepts it: no tensors, no arrays


def test_describe_images_checks_placeholder_lengths(processor, kit) -> None:  # type: ignore[no-untyped-def]
    png = kit.encode(kit.make_image(1), "PNG")
    with pytest.raises(ValueError, match=r"placeholder length 5 != 4 tokens"):
        describe_images(processor, [png], placeholders=[[0, 5]])
    with pytest.raises(ValueError, match="2 placeholders for 1 images"):
        describe_images(processor, [png], placeholders=[[0, 4], [9, 4]])


@pytest.mark.parametrize("where", ["mm_items", "mm_hashes"])
def test_non_image_modality_is_refused(where: str) -> None:
    d = descriptor(["a"], [[1, 2, 2]])
    d[where]["video"] = [{"video_grid_thw": [[1, 2, 2]]}] if where == "mm_items" else ["v"]
    with pytest.raises(ValueError, match="image modality only"):
        collect_mm_refs(d, [])


def test_non_qwen_descriptor_is_refused() -> None:
    kimi = {"mm_hashes": {"image": ["a"]}, "mm_items": {"image": [{"grid_thws": [[1, 2, 2]]}]}}
    with pytest.raises(ValueError, match="Qwen-style image descriptors"):
        image_slots(kimi)


@pytest.mark.parametrize(
    ("d", "message"),
    [
        (descriptor(["a", "b"], [[1, 2, 2]]), "2 image hashes but 1 image items"),
        (descriptor([None], [[1, 2, 2]]), "has no hash"),  # type: ignore[list-item]
        (descriptor(["a"], [[1, 2]]), "expected one"),
        (descriptor(["a"], [[0, 2, 2]]), "non-positive"),
        ({**descriptor(["a"], [[1, 2, 2]]), "mm_placeholders": {"image": []}}, "0 image placeholders for 1"),
    ],
)
def test_malformed_descriptors(d: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        image_slots(d)


def test_normalize_turns_tensors_into_nested_lists_and_drops_pixels() -> None:
    raw = {
        "mm_hashes": {"image": [np.str_("h1"), "h2"]},
        "mm_items": {
            "image": [
                {"pixel_values": torch.zeros(4, 8), "image_grid_thw": torch.tensor([[1, 2, 3]])},
                {"pixel_values": np.zeros((4, 8)), "image_grid_thw": np.array([1, 2, 2])},
            ]
        },
        "mm_placeholders": {"image": [(np.int64(3), np.int64(1)), (9, 1)]},
        "mm_hashes_extra": None,
    }
    out = normalize_descriptor(raw)
    assert out == {
        "mm_hashes": {"image": ["h1", "h2"]},
        "mm_items": {"image": [{"image_grid_thw": [[1, 2, 3]]}, {"image_grid_thw": [[1, 2, 2]]}]},
        "mm_placeholders": {"image": [[3, 1], [9, 1]]},
    }
    assert type(out["mm_hashes"]["image"][0]) is str
    msgspec.msgpack.encode(out)


def test_collect_mm_refs_keeps_uri_order_and_duplicates(kit) -> None:  # type: ignore[no-untyped-def]
    a, b = "file:///data/outputs/run_x/assets/images/a.png", "file:///data/outputs/run_x/assets/images/b.png"
    inline = "data:image/png;base64,AAAA"
    messages = [
        kit.user_turn(a),
        {"role": "assistant", "content": "red"},
        kit.user_turn(a, b, "https://example.com/c.png", inline),
    ]
    assert image_uris(messages) == [a, a, b, inline]
    assert image_uris([Message(role="user", content=[{"type": "image_url", "image_url": {"url": b}}])]) == [b]
    refs = collect_mm_refs(descriptor(["ha", "hb"], [[1, 2, 2], [1, 2, 2]]), messages)
    assert refs.uris == [a, a, b, inline]
    with pytest.raises(ValueError, match="no file:// or data:image"):
        collect_mm_refs(descriptor(["ha"], [[1, 2, 2]]), [kit.user_turn("https://example.com/c.png")])


def test_refs_round_trip_on_the_wire_and_make_samples_multimodal() -> None:
    refs = MMRefs(descriptor=normalize_descriptor(descriptor(["h"], [[1, 4, 4]])), uris=["file:///x/h.png"])
    sample = TrainingSample(pack_ints([1, 2]), pack_ints([3]), pack_floats([-0.5]), 1.0, 1.0, mm_refs=refs)
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(sample), type=TrainingSample)
    assert back.mm_refs == refs and back.is_multimodal and back.mm_kwargs is None
    batch = MicroBatch(1, 2, b"", b"", b"", b"", b"", mm_refs=refs)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(batch), type=MicroBatch).is_multimodal


def test_merge_mm_refs_concatenates_in_order() -> None:
    r1 = MMRefs(descriptor(["a", "b"], [[1, 2, 2], [1, 2, 4]]), ["u1", "u2"])
    r2 = MMRefs({**descriptor(["a"], [[1, 2, 2]]), "mm_placeholders": {"image": [[0, 1]]}}, ["u1"])
    merged = merge_mm_refs([r1, r2])
    assert merged.descriptor["mm_hashes"]["image"] == ["a", "b", "a"]
    assert [i["image_grid_thw"] for i in merged.descriptor["mm_items"]["image"]] == [
        [[1, 2, 2]],
        [[1, 2, 4]],
        [[1, 2, 2]],
    ]
    assert "mm_placeholders" not in merged.descriptor  # r1 has none
    assert merged.uris == ["u1", "u2", "u1"]


def test_image_placeholders() -> None:
    assert image_placeholders([5, 9, 9, 9, 6, 9, 7, 9, 9], 9) == [[1, 3], [5, 1], [7, 2]]
    assert image_placeholders([1, 2], 9) == []
