"""Shared fixtures: a tiny real Qwen2-VL image processor saved offline, images, and a run tree."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from rlrun.runtime.assets import RunTree, write_image
from rlrun.runtime.mm import load_image_processor

torch.set_num_threads(1)

# patch 14, merge 2, temporal 2, min 56x56, max 224x224: images of up to 8x8 patches (16 image tokens)
TINY_PROCESSOR = {
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "min_pixels": 56 * 56,
    "max_pixels": 14 * 14 * 4 * 64,
}


_SPY_LOCK = threading.Lock()  # module level: transformers deep-copies processor attributes


class CountingProcessor(Qwen2VLImageProcessorPil):
    """The real processor, counting calls and the most calls in flight at once (a spy, not a fake)."""

    delay = 0.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with _SPY_LOCK:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            return super().__call__(*args, **kwargs)
        finally:
            with _SPY_LOCK:
                self.in_flight -= 1


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-qwen2-vl")
    Qwen2VLImageProcessorPil(**TINY_PROCESSOR).save_pretrained(path)
    return path


@pytest.fixture
def processor(model_dir: Path) -> Qwen2VLImageProcessorPil:
    return load_image_processor(model_dir)


@pytest.fixture
def counting(model_dir: Path) -> CountingProcessor:
    return CountingProcessor.from_pretrained(str(model_dir))


@pytest.fixture
def tree(tmp_path: Path) -> RunTree:
    return RunTree(tmp_path / "outputs", "mm").ensure()


def make_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A smooth gradient with noise: distinct per seed, compressible like a real picture."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, seed * 37 % 256)], -1
    )
    noisy = base + rng.integers(-20, 20, size=base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def stored_uri(tree: RunTree, image: Image.Image, fmt: str = "PNG") -> str:
    return write_image(tree.images_dir, encode(image, fmt), f"image/{fmt.lower()}").as_uri()


def user_turn(*urls: str, text: str = "what colour?") -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"role": "user", "content": [*content, {"type": "text", "text": text}]}


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (importlib mode: they cannot import conftest)."""
    return SimpleNamespace(
        make_image=make_image, encode=encode, data_url=data_url, stored_uri=stored_uri, user_turn=user_turn
    )
