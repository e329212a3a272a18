"""Prompt rendering shared by inference (what it generates from) and anyone re-tokenizing a prompt.

Without torchvision there is no `Qwen2VLProcessor`, so the caller expands image placeholders itself:
each image becomes <|vision_start|> + <|image_pad|> x N + <|vision_end|>, N = t*h*w // merge**2 of the
grid the image processor will produce (`rlrun.runtime.mm` geometry, from the image size alone).
Rendering is the Qwen chat format without a default system prompt (shorter prompts; the tiny model has
no prior to keep).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from rlrun.runtime.assets import parse_data_url
from rlrun.runtime.config import DEFAULT_MAX_IMAGE_PIXELS
from rlrun.runtime.fileurl import read_confined, uri_to_path
from rlrun.runtime.imagedecode import decode_rgb
from rlrun.runtime.mm import Geometry
from rlrun.runtime.mm import image_token_count as mm_image_token_count

ImageLoader = Callable[[str], Image.Image]

# Tokens only the prompt renderer may place: a sampled <|image_pad|> would make the trainer's forward find
# more image tokens than images. The CPU engine never samples them; env-workers ask vLLM not to
# (`bad_words`), so both engines honour the same list.
RENDERER_ONLY_TOKENS = (
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|im_start|>",
)


def image_token_count(image_processor: Any, image: Image.Image) -> int:
    """Number of <|image_pad|> tokens the Qwen2-VL processor's grid gives `image` (no pixels computed)."""
    geometry = Geometry.of(image_processor)
    return mm_image_token_count(geometry.grid(image.width, image.height), geometry.merge_size)


def load_image_url(
    url: str, root: Path | None = None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> Image.Image:
    """Open a `file://` or `data:image/...;base64,` URL as the canonical RGB image (`decode_rgb`, which the
    trainer's materializer uses too). `root`, when given, confines `file://` URLs to it (symlinks followed).

    Raises ValueError (`ImageRejected` for non-images and images over `max_pixels`) or OSError.
    """
    if url.startswith("file:"):
        data = read_confined([root], url) if root is not None else uri_to_path(url).read_bytes()
        return decode_rgb(data, max_pixels)
    if url.startswith("data:image/"):
        return decode_rgb(parse_data_url(url)[1], max_pixels)
    raise ValueError(f"unsupported image URL {url[:80]!r}: expected file:// or data:image/...;base64,")


def image_urls(messages: Sequence[dict[str, Any]]) -> list[str]:
    """The image URLs of OpenAI-format messages, in conversation order."""
    urls = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    image_url = part.get("image_url")
                    url = image_url.get("url") if isinstance(image_url, dict) else image_url
                    if not isinstance(url, str):
                        raise ValueError(f"image_url part without a string url: {part!r}")
                    urls.append(url)
    return urls


def render_prompt(
    messages: Sequence[dict[str, Any]],
    tokenizer: Any,
    image_processor: Any,
    load_image: ImageLoader = load_image_url,
) -> tuple[list[int], list[Image.Image]]:
    """Token ids of the chat prompt (ending in the assistant header) and its images in order."""
    pieces: list[str] = []
    images: list[Image.Image] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role not in {"system", "user", "assistant", "tool"}:
            raise ValueError(f"message role {role!r} is not one of system/user/assistant/tool")
        pieces.append(f"<|im_start|>{role}\n")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            kind = part.get("type")
            if kind == "text":
                pieces.append(part["text"])
            elif kind == "image_url":
                image_url = part["image_url"]
                image = load_image(image_url["url"] if isinstance(image_url, dict) else image_url)
                images.append(image)
                pads = "<|image_pad|>" * image_token_count(image_processor, image)
                pieces.append(f"<|vision_start|>{pads}<|vision_end|>")
            else:
                raise ValueError(f"content part type {kind!r} is not one of text/image_url")
        pieces.append("<|im_end|>\n")
    pieces.append("<|im_start|>assistant\n")
    return tokenizer.encode("".join(pieces), add_special_tokens=False), images
