"""Reading image sources (file:// URIs, data URLs, bytes, PIL images) into encoded bytes and decoded images.

Identity is the content hash of the *encoded* bytes (the same 16 hex chars that name the file under
`assets/images`): hashing ~100 KB of JPEG costs microseconds, while hashing decoded pixels would need a
decode first. A PIL image is identified by its PNG encoding, which is also how `offload_images` stores it.
Decoding goes through `rlrun.runtime.imagedecode`, the decoder inference uses too, so the trainer's
pixels are the ones the policy sampled from.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from rlrun.runtime.assets import encode_pil, parse_data_url
from rlrun.runtime.config import DEFAULT_MAX_IMAGE_PIXELS
from rlrun.runtime.fileurl import read_confined, uri_to_path
from rlrun.runtime.imagedecode import decode_rgb, probe

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
        return read_confined([root], source) if root is not None else uri_to_path(source).read_bytes()
    raise ValueError(f"unsupported image source {source[:120]!r}: expected a file:// URI or a data:image URL")


def image_size(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the image header, without decoding the pixels.

    Raises `ImageRejected` (a ValueError) for non-images and images over `max_pixels`.
    """
    return probe(data, max_pixels).size


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode encoded image bytes fully into the canonical RGB image (`imagedecode.decode_rgb`)."""
    return decode_rgb(data, max_pixels)
