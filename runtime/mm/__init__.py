"""Multimodal data as refs: descriptors without pixels, and pixels re-created next to the GPU.

descriptors  what a sample's images are (hash, grid, placeholder), `MMRefs` for the wire
processor    the model's Qwen2-VL image processor, loaded from the model directory, and its geometry
images       reading file:// URIs, data URLs, bytes and PIL images
materialize  `Materializer`: refs -> pixel_values / image_grid_thw, decode once per distinct image
tripwires    token-type ids and the image token/feature check before the forward
"""

from rlrun.runtime.mm.descriptors import (
    ImageSlot,
    collect_mm_refs,
    describe_images,
    image_placeholders,
    image_slots,
    image_token_count,
    image_uris,
    merge_mm_refs,
    normalize_descriptor,
)
from rlrun.runtime.mm.materialize import (
    ImageFailure,
    MaterializedImages,
    Materializer,
    MaterializeStats,
    MissingImageError,
    decode_mm_kwargs,
    encode_mm_kwargs,
)
from rlrun.runtime.mm.processor import Geometry, load_image_processor, process_image
from rlrun.runtime.mm.tripwires import check_image_tokens, image_rows, mm_token_type_ids

__all__ = [
    "Geometry",
    "ImageFailure",
    "ImageSlot",
    "MaterializeStats",
    "MaterializedImages",
    "Materializer",
    "MissingImageError",
    "check_image_tokens",
    "collect_mm_refs",
    "decode_mm_kwargs",
    "describe_images",
    "encode_mm_kwargs",
    "image_placeholders",
    "image_rows",
    "image_slots",
    "image_token_count",
    "image_uris",
    "load_image_processor",
    "merge_mm_refs",
    "mm_token_type_ids",
    "normalize_descriptor",
    "process_image",
]
