"""Reading image sources (file:// URIs, data URLs, bytes, PIL images) into encoded bytes and decoded images.

Identity is the content hash of the *encoded* bytes (the same 16 hex chars that name the file under
`assets/images`): hashing ~100 KB of JPEG costs microseconds, while hashing decoded pixels would need a
decode first. A PIL image is identified by its PNG encoding, which is also how `offload_images` stores it.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from rlrun.runtime.assets import encode_pil, parse_data_url, resolve_inside, uri_to_path

ImageSource = str | bytes | Image.Image


def read_source(source: ImageSource, root: Path | None = None) -> bytes:
    """The encoded bytes of an image source.

    `root`, when given, confines `file://` URIs to that directory (symlinks out and `..` are refused with
    ValueError). Unreadable files raise OSError; malformed data URLs raise ValueError.
    """
    if isinstance(source, Image.Image):
        return encode_pil(source, "image/png")
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if source.startswith("data:"):
        return parse_data_url(source)[1]
    if source.startswith("file:"):
        path = resolve_inside(root, source) if root is not None else uri_to_path(source)
        return path.read_bytes()
    raise ValueError(f"unsupported image source {source[:120]!r}: expected a file:// URI or a data:image URL")


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def decode(data: bytes) -> Image.Image:
    """Decode encoded image bytes fully (so the buffer can be released)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
