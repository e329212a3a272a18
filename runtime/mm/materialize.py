"""Re-creating `pixel_values` from image refs next to the GPU: decode each distinct image once, fill slots.

The trainer's data loader (deferred path, the default) and the orchestrator (non-deferred path, behind
`multimodal.deferMaterialization: false`) both go through `Materializer`, so the two paths produce
byte-identical tensors; the non-deferred path only adds `encode_mm_kwargs` / `decode_mm_kwargs` around it.

Safety rules:
  * a re-created grid that differs from the descriptor's fails loudly ("processor skew"): the model would
    otherwise read image tokens that do not match the pixels;
  * a missing or unreadable image fails naming its URI and hash (policy "error"), or, with policy "drop",
    its slots get zero pixels of the promised shape and are reported in `failures` so the caller zeroes
    that sample's loss. Never another image;
  * a URI outside `root` (the run directory) is always refused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rlrun.runtime.assets import PathEscapeError, content_hash
from rlrun.runtime.config import DEFAULT_MAX_IMAGE_PIXELS, MultimodalConfig
from rlrun.runtime.mm.descriptors import ImageSlot, image_slots
from rlrun.runtime.mm.images import decode, read_source
from rlrun.runtime.mm.processor import Geometry, process_image
from rlrun.runtime.wire import EncodedTensor, MMRefs

log = logging.getLogger(__name__)
MissingPolicy = Literal["error", "drop"]
MM_KEYS = ("pixel_values", "image_grid_thw")


class MissingImageError(ValueError):
    """An image slot could not be filled: no readable URI carries its hash."""


@dataclass(frozen=True)
class ImageFailure:
    """A slot filled with zeros under policy "drop": the caller must zero the loss of the sample with it."""

    slot: int
    hash: str
    reason: str


@dataclass
class MaterializeStats:
    """Counters since the last `reset_stats()` (the trainer resets them once per step)."""

    seconds: float = 0.0  # wall time spent in materialize()
    batches: int = 0  # materialize() calls that had images
    slots: int = 0  # image slots filled, duplicates included
    distinct: int = 0  # images actually decoded and run through the processor
    failed: int = 0  # slots dropped under policy "drop"

    def metrics(self) -> dict[str, float]:
        return {
            "time/mm_materialize": self.seconds,
            "mm/images_materialized": float(self.slots),
            "mm/images_distinct": float(self.distinct),
            "mm/images_failed": float(self.failed),
        }


class MaterializedImages(Mapping[str, torch.Tensor]):
    """`pixel_values` [patches, patch_dim] float32 and `image_grid_thw` [images, 3] int64, in slot order.

    A mapping, so `model(**inputs, **images)` works; `failures` lists slots dropped under policy "drop".
    """

    def __init__(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        failures: Sequence[ImageFailure] = (),
    ) -> None:
        self.pixel_values = pixel_values
        self.image_grid_thw = image_grid_thw
        self.failures = tuple(failures)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in MM_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(MM_KEYS)

    def __len__(self) -> int:
        return len(MM_KEYS)

    @property
    def failed_slots(self) -> list[int]:
        return [f.slot for f in self.failures]


@dataclass(frozen=True)
class _Processed:
    pixels: np.ndarray
    grid: tuple[int, int, int]
    uri: str


class Materializer:
    """Turns `MMRefs` into model inputs with the model's image processor, `concurrency` images at a time.

    `root`, when given (the run directory), confines every `file://` URI to it; an image over `max_pixels`
    fails like an unreadable one, naming its URI and hash (never a decompression bomb). Thread-safe; use one per
    process and `close()` it (or use it as a context manager) to stop its worker threads.
    """

    def __init__(
        self,
        processor: Any,
        concurrency: int = 4,
        missing_policy: MissingPolicy = "error",
        root: str | Path | None = None,
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if missing_policy not in ("error", "drop"):
            raise ValueError(f"missing_policy must be 'error' or 'drop', got {missing_policy!r}")
        self.processor = processor
        self.geometry = Geometry.of(processor)
        self.concurrency = concurrency
        self.missing_policy = missing_policy
        self.root = Path(root).resolve() if root is not None else None
        self.max_pixels = max_pixels
        self.stats = MaterializeStats()
        self._stats_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="mm-materialize")

    @classmethod
    def from_config(
        cls, mm: MultimodalConfig, processor: Any, root: str | Path | None = None
    ) -> Materializer:
        """The materializer every role builds from `multimodal` (concurrency, missing policy, pixel limit)."""
        return cls(
            processor,
            mm.materialize_concurrency,
            mm.missing_image_policy,
            root=root,
            max_pixels=mm.max_image_pixels,
        )

    def encode(self, refs: MMRefs) -> dict[str, EncodedTensor] | None:
        """Pixels for the wire (the non-deferred path), or None when policy "drop" dropped an image slot.

        Encoded pixels cannot tell the trainer which rows lost their image, so the caller drops the whole
        sample (it trains nothing, as "drop" promises); the dropped images are logged by hash and reason.
        """
        images = self.materialize(refs)
        if images.failures:
            detail = "; ".join(f"image {f.hash} (slot {f.slot}): {f.reason}" for f in images.failures[:4])
            log.warning("dropping a sample (missingImagePolicy drop): %s", detail)
            return None
        return encode_mm_kwargs(images)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Materializer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def reset_stats(self) -> MaterializeStats:
        """Return the counters so far and start new ones (call once per step, then log `.metrics()`)."""
        with self._stats_lock:
            stats, self.stats = self.stats, MaterializeStats()
        return stats

    def materialize_many(
        self, refs: Sequence[MMRefs | None], filtered: Sequence[bool] | None = None
    ) -> list[MaterializedImages | None]:
        """Materialize a batch; samples without refs or marked filtered get None and cost nothing."""
        if filtered is not None and len(filtered) != len(refs):
            raise ValueError(f"{len(filtered)} filtered flags for {len(refs)} samples")
        return [
            None if r is None or (filtered is not None and filtered[i]) else self.materialize(r)
            for i, r in enumerate(refs)
        ]

    def materialize(self, refs: MMRefs) -> MaterializedImages:
        """Decode each distinct image of `refs` once, run the processor, and fill every slot in order."""
        start = time.perf_counter()
        slots = image_slots(refs.descriptor)
        if not slots:
            return self._empty()
        processed, problems = self._process_distinct(refs.uris, {s.hash for s in slots})
        parts: list[np.ndarray] = []
        grids: list[tuple[int, int, int]] = []
        failures: list[ImageFailure] = []
        for slot in slots:
            got = processed.get(slot.hash)
            if got is None:
                failures.append(ImageFailure(slot.index, slot.hash, _why_missing(slot, refs.uris, problems)))
                t, h, w = slot.grid
                parts.append(np.zeros((t * h * w, self.geometry.patch_dim), dtype=np.float32))
                grids.append(slot.grid)
                continue
            if got.grid != slot.grid:
                raise ValueError(
                    f"image {slot.hash} (slot {slot.index}, {got.uri[:200]}): re-created image_grid_thw "
                    f"{[list(got.grid)]} != descriptor {[list(slot.grid)]} (processor skew: the image "
                    "processor settings differ from the ones that built the descriptor)"
                )
            parts.append(got.pixels)
            grids.append(got.grid)
        if failures and self.missing_policy == "error":
            detail = "; ".join(f"image {f.hash} (slot {f.slot}): {f.reason}" for f in failures[:4])
            more = f" (+{len(failures) - 4} more)" if len(failures) > 4 else ""
            raise MissingImageError(f"cannot materialize {len(failures)} image slot(s): {detail}{more}")
        result = MaterializedImages(
            torch.from_numpy(np.concatenate(parts)), torch.tensor(grids, dtype=torch.int64), failures
        )
        with self._stats_lock:
            self.stats.seconds += time.perf_counter() - start
            self.stats.batches += 1
            self.stats.slots += len(slots)
            self.stats.distinct += len(processed)
            self.stats.failed += len(failures)
        return result

    def _empty(self) -> MaterializedImages:
        return MaterializedImages(
            torch.zeros((0, self.geometry.patch_dim), dtype=torch.float32),
            torch.zeros((0, 3), dtype=torch.int64),
        )

    def _process_distinct(
        self, uris: Sequence[str], needed: set[str]
    ) -> tuple[dict[str, _Processed], dict[str, str]]:
        """Read every distinct URI, and decode + process each needed hash exactly once (bounded threads)."""
        processed: dict[str, _Processed] = {}
        problems: dict[str, str] = {}
        claimed: set[str] = set()
        lock = threading.Lock()

        def load(uri: str) -> None:
            try:
                data = read_source(uri, self.root)
            except PathEscapeError:
                raise
            except (OSError, ValueError) as err:
                with lock:
                    problems[uri] = f"unreadable ({type(err).__name__}: {err})"
                return
            image_hash = content_hash(data)
            with lock:
                if image_hash not in needed or image_hash in claimed:
                    return  # another URI carries the same image: decode it once
                claimed.add(image_hash)
            try:
                pixels, grid = process_image(self.processor, decode(data, self.max_pixels))
            except Exception as err:  # a corrupt file must name itself, whatever PIL raises
                with lock:
                    problems[uri] = f"hash {image_hash} cannot be decoded ({type(err).__name__}: {err})"
                return
            with lock:
                processed[image_hash] = _Processed(pixels, grid, uri)

        for _ in self._pool.map(load, dict.fromkeys(uris)):
            pass
        return processed, problems


def _why_missing(slot: ImageSlot, uris: Sequence[str], problems: dict[str, str]) -> str:
    """Name the URI(s) that should have carried the image: content-addressed names start with the hash."""
    named = [u for u in dict.fromkeys(uris) if u.rsplit("/", 1)[-1].split(".", 1)[0] == slot.hash]
    if named:
        return "; ".join(f"{u[:200]}: {problems.get(u, 'content does not match its name')}" for u in named)
    if problems:
        listed = "; ".join(f"{u[:120]}: {why}" for u, why in problems.items())
        return f"no readable URI carries it; {listed}"
    return f"none of the {len(set(uris))} URI(s) carries this hash: {[u[:120] for u in dict.fromkeys(uris)]}"


def encode_mm_kwargs(images: Mapping[str, torch.Tensor]) -> dict[str, EncodedTensor]:
    """Pixels for the wire (non-deferred path). Refuses results with dropped slots: they need a decision."""
    failures = getattr(images, "failures", ())
    if failures:
        raise ValueError(
            f"refusing to encode pixels with {len(failures)} dropped image slot(s) "
            f"({[f.hash for f in failures]}): drop the sample instead"
        )
    return {key: EncodedTensor.from_array(value) for key, value in images.items()}


def decode_mm_kwargs(encoded: Mapping[str, EncodedTensor]) -> dict[str, torch.Tensor]:
    """Wire pixels back to tensors (a copy: the wire buffer is read-only and may be reused)."""
    return {key: torch.from_numpy(value.to_array().copy()) for key, value in encoded.items()}
