"""Descriptor-only multimodal data: per image its identity hash, patch grid and placeholder span, no pixels.

    {"mm_hashes": {"image": [hash, ...]},
     "mm_items": {"image": [{"image_grid_thw": [[t, h, w]]}, ...]},
     "mm_placeholders": {"image": [[offset, length], ...]}}      (placeholders optional)

A few hundred bytes stand in for tens of MB of float32 `pixel_values`; whoever needs pixels re-creates
them from the images the URIs name (`materialize.py`). Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlrun.runtime.assets import content_hash
from rlrun.runtime.config import DEFAULT_MAX_IMAGE_PIXELS
from rlrun.runtime.mm.images import ImageSource, image_size, read_source
from rlrun.runtime.mm.processor import Geometry
from rlrun.runtime.wire import MODALITY, MMRefs


def image_token_count(grid_thw: Sequence[int] | Sequence[Sequence[int]], merge_size: int) -> int:
    """Number of image tokens one image with this (t, h, w) patch grid occupies in `input_ids`."""
    t, h, w = _grid(grid_thw, "grid_thw")
    return t * h * w // (merge_size * merge_size)


@dataclass(frozen=True)
class ImageSlot:
    """One image position in a sample: which image (hash) and the grid the descriptor promises."""

    index: int
    hash: str
    grid: tuple[int, int, int]


def _grid(value: Any, where: str) -> tuple[int, int, int]:
    """A Qwen grid given as [[t, h, w]], [t, h, w], a numpy array or a tensor -> (t, h, w)."""
    flat = np.asarray(value.tolist() if hasattr(value, "tolist") else value, dtype=np.int64).reshape(-1)
    if flat.size != 3:
        raise ValueError(f"{where}: expected one (t, h, w) grid, got {value!r}")
    t, h, w = (int(v) for v in flat)
    if min(t, h, w) < 1:
        raise ValueError(f"{where}: grid {[t, h, w]} has a non-positive dimension")
    return t, h, w


def _check_image_only(descriptor: dict[str, Any]) -> None:
    for key in ("mm_items", "mm_hashes", "mm_placeholders"):
        others = sorted(m for m, v in (descriptor.get(key) or {}).items() if m != MODALITY and v)
        if others:
            raise ValueError(f"multimodal refs support the image modality only; {key} has {others}")


def image_slots(descriptor: dict[str, Any]) -> list[ImageSlot]:
    """Validate a descriptor and list its image slots in order.

    Raises ValueError for non-image modalities, items without a Qwen-style `image_grid_thw`, a hash
    list whose length differs from the item list, missing hashes, and placeholders that disagree with
    the grids.
    """
    _check_image_only(descriptor)
    items = (descriptor.get("mm_items") or {}).get(MODALITY) or []
    hashes = (descriptor.get("mm_hashes") or {}).get(MODALITY) or []
    if len(items) != len(hashes):
        raise ValueError(f"descriptor has {len(hashes)} image hashes but {len(items)} image items")
    slots = []
    for i, (item, image_hash) in enumerate(zip(items, hashes, strict=True)):
        if not isinstance(item, dict) or "image_grid_thw" not in item:
            keys = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise ValueError(
                f"image item {i} has no image_grid_thw ({keys}): "
                "only Qwen-style image descriptors are supported"
            )
        if not image_hash:
            raise ValueError(f"image item {i} has no hash: cannot tell which image fills it")
        slots.append(ImageSlot(i, str(image_hash), _grid(item["image_grid_thw"], f"image item {i}")))
    placeholders = (descriptor.get("mm_placeholders") or {}).get(MODALITY)
    if placeholders is not None and len(placeholders) != len(slots):
        raise ValueError(f"descriptor has {len(placeholders)} image placeholders for {len(slots)} images")
    return slots


def normalize_descriptor(descriptor: dict[str, Any]) -> dict[str, Any]:
    """A transport-safe copy: nested-list grids, str hashes, pixels dropped, image modality only."""
    slots = image_slots(descriptor)
    out: dict[str, Any] = {
        "mm_hashes": {MODALITY: [s.hash for s in slots]},
        "mm_items": {MODALITY: [{"image_grid_thw": [list(s.grid)]} for s in slots]},
    }
    placeholders = (descriptor.get("mm_placeholders") or {}).get(MODALITY)
    if placeholders is not None:
        out["mm_placeholders"] = {MODALITY: [[int(o), int(n)] for o, n in placeholders]}
    return out


def merge_mm_refs(refs: Iterable[MMRefs]) -> MMRefs:
    """Concatenate the refs of several samples in order (one micro-batch): images and URIs keep their order.

    Repeated images stay repeated (each slot is filled; decoding still happens once per distinct image).
    Placeholders are kept only when every part has them; each offset stays relative to its own sample.
    """
    refs = list(refs)
    parts = [normalize_descriptor(r.descriptor) for r in refs]
    out: dict[str, Any] = {
        "mm_hashes": {MODALITY: [h for p in parts for h in p["mm_hashes"][MODALITY]]},
        "mm_items": {MODALITY: [it for p in parts for it in p["mm_items"][MODALITY]]},
    }
    if parts and all("mm_placeholders" in p for p in parts):
        out["mm_placeholders"] = {MODALITY: [s for p in parts for s in p["mm_placeholders"][MODALITY]]}
    return MMRefs(descriptor=out, uris=[u for r in refs for u in r.uris])


def image_uris(messages: Any) -> list[str]:
    """Every file:// or data:image `image_url.url` in `messages`, in conversation order, repeats kept."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            inner = node.get("image_url") if node.get("type") == "image_url" else None
            url = inner.get("url") if isinstance(inner, dict) else None
            if isinstance(url, str) and (url.startswith("file://") or url.startswith("data:image")):
                found.append(url)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)
        elif hasattr(node, "model_dump"):  # pydantic message objects
            walk(node.model_dump())

    walk(messages)
    return found


def collect_mm_refs(descriptor: dict[str, Any], messages: Any) -> MMRefs:
    """The wire refs of one sample: its normalized descriptor plus the image URIs of its messages.

    Offload the messages first (`assets.offload_images`) so the URIs are `file://` refs, not base64.
    Raises ValueError when the descriptor names images but the messages carry none.
    """
    normalized = normalize_descriptor(descriptor)
    uris = image_uris(messages)
    if normalized["mm_hashes"][MODALITY] and not uris:
        raise ValueError("descriptor names images but the messages carry no file:// or data:image URL")
    return MMRefs(descriptor=normalized, uris=uris)


def image_placeholders(input_ids: Sequence[int] | np.ndarray, image_token_id: int) -> list[list[int]]:
    """[offset, length] of every contiguous run of `image_token_id` in one sequence of token ids."""
    ids = np.asarray(input_ids).reshape(-1)
    is_image = np.concatenate([[False], ids == image_token_id, [False]])
    edges = np.flatnonzero(is_image[1:] != is_image[:-1])
    return [[int(start), int(end - start)] for start, end in zip(edges[::2], edges[1::2], strict=True)]


def describe_images(
    processor: Any,
    images: Sequence[ImageSource],
    *,
    placeholders: Sequence[Sequence[int]] | None = None,
    root: Path | None = None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> dict[str, Any]:
    """The descriptor of `images` (file:// URIs, data URLs, bytes or PIL images), in order, without pixels.

    Grids come from the image header (EXIF orientation applied) and the processor settings, so nothing is
    decoded; a non-image or an image over `max_pixels` raises `ImageRejected` (a ValueError). `placeholders`
    ([offset, length] per image, e.g. from `image_placeholders`) are checked against the grids.
    """
    geometry = Geometry.of(processor)
    hashes, items = [], []
    for source in images:
        data = read_source(source, root)
        hashes.append(content_hash(data))
        items.append({"image_grid_thw": [list(geometry.grid(*image_size(data, max_pixels)))]})
    descriptor: dict[str, Any] = {"mm_hashes": {MODALITY: hashes}, "mm_items": {MODALITY: items}}
    if placeholders is not None:
        spans = [[int(o), int(n)] for o, n in placeholders]
        if len(spans) != len(items):
            raise ValueError(f"{len(spans)} placeholders for {len(items)} images")
        for i, ((_, length), item) in enumerate(zip(spans, items, strict=True)):
            want = image_token_count(item["image_grid_thw"], geometry.merge_size)
            if length != want:
                raise ValueError(
                    f"image {i} ({hashes[i]}): placeholder length {length} != {want} tokens "
                    f"for grid {item['image_grid_thw']}"
                )
        descriptor["mm_placeholders"] = {MODALITY: spans}
    return descriptor
