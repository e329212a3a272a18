"""Materialization: decode once per distinct image, fill every slot, fail loudly, stay bounded."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from rlrun.runtime.assets import PathEscapeError, uri_to_path
from rlrun.runtime.config import MultimodalConfig
from rlrun.runtime.mm import (
    Materializer,
    MissingImageError,
    collect_mm_refs,
    describe_images,
    encode_mm_kwargs,
    load_image_processor,
    process_image,
)
from rlrun.runtime.wire import MMRefs


def refs_for(processor, uris: list[str], messages_uris: list[str] | None = None) -> MMRefs:  # type: ignore[no-untyped-def]
    """Refs whose slots are `uris` (in order) and whose candidate URIs are `messages_uris`."""
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": u}} for u in messages_uris or uris],
        }
    ]
    return collect_mm_refs(describe_images(processor, uris), messages)


def test_distinct_images_in_slot_order_equal_the_bare_processor(processor, counting, tree, kit) -> None:  # type: ignore[no-untyped-def]
    images = [kit.make_image(i, size) for i, size in enumerate([(64, 64), (120, 40), (30, 90)])]
    uris = [kit.stored_uri(tree, im, "PNG") for im in images]
    with Materializer(counting, root=tree.run_dir) as materializer:
        out = materializer.materialize(refs_for(processor, uris))
    expected = [process_image(processor, im) for im in images]
    assert torch.equal(out["pixel_values"], torch.from_numpy(np.concatenate([p for p, _ in expected])))
    assert out["image_grid_thw"].tolist() == [list(g) for _, g in expected]
    assert out["pixel_values"].dtype == torch.float32 and out["image_grid_thw"].dtype == torch.int64
    assert dict(out).keys() == {"pixel_values", "image_grid_thw"} and out.failures == ()
    assert counting.calls == 3


def test_image_used_in_three_slots_is_processed_once(processor, counting, tree, kit) -> None:  # type: ignore[no-untyped-def]
    uri = kit.stored_uri(tree, kit.make_image(7), "JPEG")
    # a cumulative prompt: the image appears in three turns, so three slots and three candidate URIs
    refs = refs_for(processor, [uri, uri, uri])
    assert refs.uris == [uri, uri, uri]
    materializer = Materializer(counting, root=tree.run_dir)
    out = materializer.materialize(refs)
    materializer.close()
    assert counting.calls == 1
    rows = out["pixel_values"].shape[0] // 3
    blocks = out["pixel_values"].split(rows)
    assert torch.equal(blocks[0], blocks[1]) and torch.equal(blocks[0], blocks[2])
    assert out["image_grid_thw"].tolist() == [[1, 4, 4]] * 3
    stats = materializer.reset_stats()
    assert (stats.slots, stats.distinct, stats.batches, stats.failed) == (3, 1, 1, 0)
    assert stats.seconds > 0 and stats.metrics()["mm/images_distinct"] == 1.0
    assert materializer.stats.slots == 0  # reset


def test_same_image_as_file_and_data_url_is_processed_once(processor, counting, tree, kit) -> None:  # type: ignore[no-untyped-def]
    png = kit.encode(kit.make_image(2), "PNG")
    uri = kit.stored_uri(tree, kit.make_image(2), "PNG")
    refs = refs_for(processor, [uri, kit.data_url(png)])
    with Materializer(counting, root=tree.run_dir) as materializer:
        out = materializer.materialize(refs)
    assert counting.calls == 1 and out["image_grid_thw"].shape == (2, 3)


def test_processor_skew_fails_naming_image_and_both_grids(processor, tree, kit, tmp_path) -> None:  # type: ignore[no-untyped-def]
    uri = kit.stored_uri(tree, kit.make_image(4, (200, 200)), "PNG")
    refs = refs_for(processor, [uri])  # built with max 224x224 -> grid [1, 14, 14]
    other_dir = tmp_path / "other-model"
    type(processor)(
        patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=3136, max_pixels=112 * 112
    ).save_pretrained(other_dir)
    with Materializer(load_image_processor(other_dir)) as materializer, pytest.raises(ValueError) as err:
        materializer.materialize(refs)
    message = str(err.value)
    assert "processor skew" in message and refs.descriptor["mm_hashes"]["image"][0] in message
    assert "[[1, 8, 8]]" in message and "[[1, 14, 14]]" in message


def test_missing_image_fails_naming_uri_and_hash(processor, tree, kit) -> None:  # type: ignore[no-untyped-def]
    uri = kit.stored_uri(tree, kit.make_image(5), "PNG")
    refs = refs_for(processor, [uri])
    uri_to_path(uri).unlink()
    with Materializer(processor, root=tree.run_dir) as materializer, pytest.raises(MissingImageError) as err:
        materializer.materialize(refs)
    assert uri in str(err.value) and refs.descriptor["mm_hashes"]["image"][0] in str(err.value)
    assert "FileNotFoundError" in str(err.value)


def test_corrupt_image_fails_naming_uri(processor, tree, kit) -> None:  # type: ignore[no-untyped-def]
    uri = kit.stored_uri(tree, kit.make_image(5), "PNG")
    refs = refs_for(processor, [uri])
    uri_to_path(uri).write_bytes(b"\x89PNG not really")
    with (
        Materializer(processor, root=tree.run_dir) as materializer,
        pytest.raises(MissingImageError, match=uri),
    ):
        materializer.materialize(refs)


def test_hash_carried_by_no_uri_fails(processor, tree, kit) -> None:  # type: ignore[no-untyped-def]
    a = kit.stored_uri(tree, kit.make_image(1), "PNG")
    b = kit.stored_uri(tree, kit.make_image(2), "PNG")
    refs = refs_for(processor, [a], messages_uris=[b])
    with Materializer(processor) as materializer, pytest.raises(MissingImageError, match="carries this hash"):
        materializer.materialize(refs)


def test_drop_policy_reports_failed_slots_and_zero_fills_them(processor, tree, kit) -> None:  # type: ignore[no-untyped-def]
    good = kit.stored_uri(tree, kit.make_image(1), "PNG")
    gone = kit.stored_uri(tree, kit.make_image(2, (120, 40)), "PNG")
    refs = refs_for(processor, [good, gone, good])
    os.remove(uri_to_path(gone))
    with Materializer(processor, missing_policy="drop", root=tree.run_dir) as materializer:
        out = materializer.materialize(refs)
        stats = materializer.reset_stats()
    assert out.failed_slots == [1]
    assert out.failures[0].hash == refs.descriptor["mm_hashes"]["image"][1] and gone in out.failures[0].reason
    assert out["image_grid_thw"].tolist() == [[1, 4, 4], [1, 2, 8], [1, 4, 4]]
    rows = [16, 16, 16]
    first, dropped, third = out["pixel_values"].split(rows)
    assert torch.equal(first, third) and not torch.any(dropped) and first.abs().sum() > 0
    assert (stats.failed, stats.distinct, stats.slots) == (1, 1, 3)
    with pytest.raises(ValueError, match="dropped image slot"):
        encode_mm_kwargs(out)


def test_uris_outside_the_run_dir_are_always_refused(processor, tree, kit, tmp_path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(kit.encode(kit.make_image(1), "PNG"))
    link = tree.images_dir / "link.png"
    link.symlink_to(outside)
    for uri in (outside.as_uri(), link.as_uri(), tree.images_dir.as_uri() + "/../../../../elsewhere.png"):
        refs = refs_for(processor, [outside.as_uri()], messages_uris=[uri])
        with (
            Materializer(processor, missing_policy="drop", root=tree.run_dir) as materializer,
            pytest.raises(PathEscapeError),
        ):
            materializer.materialize(refs)


def test_concurrency_is_bounded(processor, counting, tree, kit) -> None:  # type: ignore[no-untyped-def]
    uris = [kit.stored_uri(tree, kit.make_image(i), "PNG") for i in range(6)]
    refs = refs_for(processor, uris)
    counting.delay = 0.05  # long enough that workers overlap even on a loaded machine
    with Materializer(counting, concurrency=2) as materializer:
        materializer.materialize(refs)
    assert counting.calls == 6 and counting.max_in_flight == 2
    counting.max_in_flight = 0
    with Materializer(counting, concurrency=1) as materializer:
        materializer.materialize(refs)
    assert counting.max_in_flight == 1


def test_filtered_and_text_samples_cost_nothing(processor, counting, tree, kit) -> None:  # type: ignore[no-untyped-def]
    refs = refs_for(processor, [kit.stored_uri(tree, kit.make_image(3), "PNG")])
    with Materializer(counting) as materializer:
        out = materializer.materialize_many([refs, None, refs], filtered=[True, False, False])
        assert out[0] is None and out[1] is None and out[2] is not None
        assert counting.calls == 1
        with pytest.raises(ValueError, match="2 filtered flags for 3 samples"):
            materializer.materialize_many([refs, None, refs], filtered=[True, False])


def test_refs_without_images_give_empty_tensors(processor) -> None:  # type: ignore[no-untyped-def]
    with Materializer(processor) as materializer:
        out = materializer.materialize(MMRefs({"mm_hashes": {"image": []}, "mm_items": {"image": []}}, []))
    assert out["pixel_values"].shape == (0, 1176) and out["image_grid_thw"].shape == (0, 3)


def test_bad_settings_are_refused(processor) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="concurrency"):
        Materializer(processor, concurrency=0)
    with pytest.raises(ValueError, match="missing_policy"):
        Materializer(processor, missing_policy="ignore")  # type: ignore[arg-type]


def test_the_configured_pixel_limit_fails_or_drops_the_image_by_name(processor, tree, kit) -> None:  # type: ignore[no-untyped-def]
    small, big = kit.stored_uri(tree, kit.make_image(1, (30, 30))), kit.stored_uri(tree, kit.make_image(2))
    refs = refs_for(processor, [small, big])
    mm = MultimodalConfig(maxImagePixels=30 * 30)
    with (
        Materializer.from_config(mm, processor, root=tree.run_dir) as materializer,
        pytest.raises(MissingImageError, match=r"slot 1\).*64x64 = 4096 pixels exceeds the limit of 900"),
    ):
        materializer.materialize(refs)
    drop = mm.model_copy(update={"missing_image_policy": "drop"})
    with Materializer.from_config(drop, processor, root=tree.run_dir) as materializer:
        out = materializer.materialize(refs)
    assert [f.slot for f in out.failures] == [1] and "exceeds the limit" in out.failures[0].reason
