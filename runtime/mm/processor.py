"""The model's image processor and the geometry it implies (grids, patch sizes), from the model directory.

Only the Qwen2-VL family processor is supported (Qwen2-VL and Qwen2.5-VL share it). Every role loads it
the same way, from `<model_dir>/preprocessor_config.json`, because the trainer's materializer must
reproduce bit for bit the pixels the orchestrator and inference saw.

The PIL variant is used on purpose, although transformers' torchvision one (`Qwen2VLImageProcessor` in
5.x) is faster: measured (issue 21; transformers 5.23.0, torch 2.14.1, torchvision 0.29.1) it ran 1.81x
the PIL one's images/s per core at 1024x1024 (bench/bench_mm.py section 3), but its `pixel_values` are
not identical. Grids agree; pixels differ on every image tried (resized or not, RGB/RGBA/L/P PNG, JPEG):
by one or two uint8 levels after normalization (max |diff| 0.015-0.030) wherever an image is resized
(PIL's and torch's bicubic round differently), up to 0.32 on noisy images, and by float rounding
(2.4e-7) even when no resize happens. Pixels that depend on which role
had torchvision installed would break train/inference parity, so this module names the PIL class and the
runtime image ships without torchvision. The latter matters too: with torchvision importable,
`AutoImageProcessor` (the CPU engine's loader) returns the torchvision variant for the same file, and
tests/unit/inference/test_pixel_parity.py then fails.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

PROCESSOR_FILE = "preprocessor_config.json"
SUPPORTED_TYPES = {"Qwen2VLImageProcessor", "Qwen2VLImageProcessorPil", "Qwen2VLImageProcessorFast"}
_REQUIRED = ("patch_size", "merge_size", "temporal_patch_size")


def load_image_processor(model_dir: str | os.PathLike[str]) -> Qwen2VLImageProcessorPil:
    """Load the Qwen2-VL image processor whose settings `<model_dir>/preprocessor_config.json` holds.

    Raises FileNotFoundError naming the file when it is absent and ValueError naming the file and the
    keys when settings are missing or the processor type is not a Qwen2-VL one: silently falling back
    to library defaults would produce pixels (and grids) the inference server never saw.
    """
    path = Path(model_dir) / PROCESSOR_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the model directory must carry its image processor settings "
            "(save them with image_processor.save_pretrained(model_dir))"
        )
    settings: dict[str, Any] = json.loads(path.read_text())
    kind = settings.get("image_processor_type")
    if kind not in SUPPORTED_TYPES:
        raise ValueError(f"{path}: image_processor_type {kind!r} is not one of {sorted(SUPPORTED_TYPES)}")
    missing = [key for key in _REQUIRED if key not in settings]
    size = settings.get("size") or {}
    if not (
        {"shortest_edge", "longest_edge"} <= size.keys() or {"min_pixels", "max_pixels"} <= settings.keys()
    ):
        missing.append("size.shortest_edge/size.longest_edge (or min_pixels/max_pixels)")
    if missing:
        raise ValueError(f"{path}: missing image processor settings {missing}")
    return Qwen2VLImageProcessorPil.from_pretrained(str(path.parent))


@dataclass(frozen=True)
class Geometry:
    """What the processor settings imply for one image: its patch grid, token count and patch width."""

    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    channels: int = 3

    @classmethod
    def of(cls, processor: Any) -> Geometry:
        size = processor.size
        return cls(
            patch_size=int(processor.patch_size),
            merge_size=int(processor.merge_size),
            temporal_patch_size=int(processor.temporal_patch_size),
            min_pixels=int(size["shortest_edge"]),
            max_pixels=int(size["longest_edge"]),
        )

    @property
    def patch_dim(self) -> int:
        """Width of one `pixel_values` row."""
        return self.channels * self.temporal_patch_size * self.patch_size * self.patch_size

    def check_model(self, model_config: Any) -> None:
        """Raise ValueError unless the model's vision tower expects the patches this processor makes.

        A mismatch (e.g. a processor saved from another checkpoint) would otherwise fail deep inside the
        vision tower's reshape, or silently scramble patches when the sizes happen to divide.
        """
        vision = model_config.vision_config
        pairs = {
            "patch_size": (self.patch_size, vision.patch_size),
            "merge_size/spatial_merge_size": (self.merge_size, vision.spatial_merge_size),
            "temporal_patch_size": (self.temporal_patch_size, vision.temporal_patch_size),
            "channels/in_channels": (self.channels, getattr(vision, "in_channels", self.channels)),
        }
        wrong = {name: pair for name, pair in pairs.items() if pair[0] != pair[1]}
        if wrong:
            detail = ", ".join(f"{name}: processor {a} != model {b}" for name, (a, b) in wrong.items())
            raise ValueError(f"image processor does not match the model's vision config ({detail})")

    def grid(self, width: int, height: int) -> tuple[int, int, int]:
        """The (t, h, w) patch grid the processor produces for an image of this size, without decoding it."""
        factor = self.patch_size * self.merge_size
        resized_h, resized_w = smart_resize(height, width, factor, self.min_pixels, self.max_pixels)
        return 1, resized_h // self.patch_size, resized_w // self.patch_size


def process_image(processor: Any, image: Image.Image) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Run the processor on one image: (`pixel_values` float32 [patches, patch_dim], its grid (t, h, w))."""
    out = processor(images=[image])
    pixels = np.ascontiguousarray(out["pixel_values"], dtype=np.float32)
    t, h, w = (int(v) for v in np.asarray(out["image_grid_thw"]).reshape(-1, 3)[0])
    return pixels, (t, h, w)
