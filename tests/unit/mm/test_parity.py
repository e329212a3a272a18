"""Deferred (refs -> trainer) and non-deferred (pixels from the orchestrator) paths give identical tensors."""

from __future__ import annotations

import io

import msgspec
import numpy as np
import torch
from PIL import Image

from rlrun.runtime.assets import offload_images
from rlrun.runtime.mm import (
    Materializer,
    collect_mm_refs,
    decode_mm_kwargs,
    describe_images,
    encode_mm_kwargs,
    image_uris,
    process_image,
)
from rlrun.runtime.wire import TrainingSample, pack_floats, pack_ints


def wire(sample: TrainingSample) -> TrainingSample:
    return msgspec.msgpack.decode(msgspec.msgpack.encode(sample), type=TrainingSample)


def sample(**mm: object) -> TrainingSample:
    return TrainingSample(pack_ints([1, 2, 3]), pack_ints([4]), pack_floats([-0.1]), 0.5, 1.0, **mm)  # type: ignore[arg-type]


def test_deferred_and_eager_paths_are_byte_identical(processor, tree, kit) -> None:  # type: ignore[no-untyped-def]
    jpeg = kit.encode(kit.make_image(1, (90, 60)), "JPEG")
    png = kit.encode(kit.make_image(2, (64, 64)), "PNG")
    # what an env-worker renders: inline images, the first one repeated in a later turn
    messages = [
        kit.user_turn(kit.data_url(jpeg, "image/jpeg")),
        {"role": "assistant", "content": "blue"},
        kit.user_turn(kit.data_url(jpeg, "image/jpeg"), kit.data_url(png)),
    ]
    descriptor = describe_images(processor, image_uris(messages))

    # non-deferred: the orchestrator materializes from the messages it holds and ships pixels
    with Materializer(processor) as orchestrator:
        eager = wire(
            sample(
                mm_kwargs=encode_mm_kwargs(orchestrator.materialize(collect_mm_refs(descriptor, messages)))
            )
        )
    from_orchestrator = decode_mm_kwargs(eager.mm_kwargs)  # type: ignore[arg-type]

    # deferred: offload first, ship refs, the trainer materializes from the files
    offloaded = offload_images(messages, tree.images_dir)
    assert offloaded.written == 2
    deferred = wire(sample(mm_refs=collect_mm_refs(descriptor, offloaded.value)))
    assert all(u.startswith("file:///") for u in deferred.mm_refs.uris)  # type: ignore[union-attr]
    with Materializer(processor, root=tree.run_dir) as trainer:
        from_trainer = dict(trainer.materialize(deferred.mm_refs))  # type: ignore[arg-type]

    assert from_orchestrator.keys() == from_trainer.keys() == {"pixel_values", "image_grid_thw"}
    for key in from_trainer:
        a, b = from_orchestrator[key], from_trainer[key]
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.numpy().tobytes() == b.numpy().tobytes()

    # and both equal the bare processor run on the original images, slot by slot
    bare = [process_image(processor, Image.open(io.BytesIO(data))) for data in (jpeg, jpeg, png)]
    assert torch.equal(from_trainer["pixel_values"], torch.from_numpy(np.concatenate([p for p, _ in bare])))
    assert from_trainer["image_grid_thw"].tolist() == [list(g) for _, g in bare]
    # refs are tiny; pixels are not
    assert len(msgspec.msgpack.encode(deferred.mm_refs)) < 600 < len(msgspec.msgpack.encode(eager.mm_kwargs))
