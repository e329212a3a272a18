"""The one way image bytes become pixels, shared by every role that opens an image.

Inference renders prompts from these pixels and the trainer re-creates `pixel_values` from them, so
both must see the same image: inference once dropped alpha (transparent pixels turned black) while the
trainer's HF processor composited on white, and the policy was trained on images it never sampled from.
`decode_rgb` is now the only decoder, and it decides every case the same way for both:

* transparency (RGBA, LA, PA, P or L/RGB with a `transparency` key) is composited on **white**, as the
  HF image processors' `convert_to_rgb` does, so a processor given our RGB output changes nothing;
* CMYK and other modes go through Pillow's `convert("RGB")`;
* 16-bit greyscale (`I;16*`, `I`) is scaled to 8 bits (value >> 8), not clipped at 255;
* the EXIF orientation tag is applied (the size a descriptor is computed from is the rotated size);
* an animated image contributes its first frame.

`probe` is the cheap check for hot paths (a lazy `Image.open`: the header only, no pixel decode): bytes
that are empty, not one of `FORMATS`, or larger than the pixel limit raise `ImageRejected`, naming why.
The pixel limit (`multimodal.maxImagePixels`) is checked before any decode, so a decompression bomb is
a per-image ValueError everywhere, never Pillow's own `DecompressionBombError` escaping error handling.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from rlrun.runtime.config import DEFAULT_MAX_IMAGE_PIXELS

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
"""Formats any role accepts (Pillow plugin ids; JPEG includes MPO). Others never reach a decoder."""

_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "GIF": ".gif"}
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
BACKGROUND = (255, 255, 255, 255)


class ImageRejected(ValueError):
    """Bytes that are not an acceptable image (empty, not an image, unsupported format, too many pixels)."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: format, and the size after EXIF orientation (what the pixels will be)."""

    format: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return _EXTENSIONS.get(self.format, ".img")

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise ImageRejected when a `width` x `height` image exceeds `max_pixels`."""
    if width * height > max_pixels:
        raise ImageRejected(
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(multimodal.maxImagePixels; a decompression bomb or an oversized image)"
        )


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Lazily open `data` (header only) after the size and format checks; the caller closes it."""
    if not data:
        raise ImageRejected("image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as err:
        raise ImageRejected(f"image exceeds the pixel limit of {max_pixels} ({err})") from None
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        head = data[:8]
        raise ImageRejected(
            f"not an image in a supported format {list(FORMATS)} ({len(data)} bytes starting {head!r}): "
            f"{type(err).__name__}"
        ) from None
    try:
        check_pixels(image.width, image.height, max_pixels)
    except ImageRejected:
        image.close()
        raise
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation from the header's EXIF block (read at open, never by decoding pixels)."""
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):  # a corrupt EXIF block: no rotation
        return 1
    value = exif.get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def probe(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ImageInfo:
    """Check that `data` is an acceptable image from its header alone; its format and oriented size."""
    with _open(data, max_pixels) as image:
        width, height = image.size
        if _orientation(image) >= 5:  # 5..8 swap the axes
            width, height = height, width
        return ImageInfo(image.format or "", width, height)


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode `data` into the canonical RGB image every role uses (see the module docstring).

    Raises ImageRejected (a ValueError) for anything `probe` refuses and for a corrupt or truncated file.
    """
    with _open(data, max_pixels) as image:
        orientation = _orientation(image)
        try:
            image.seek(0)  # animated: the first frame
            image.load()
            rgb = to_rgb(image)
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            raise ImageRejected(f"cannot decode {image.format} image: {type(err).__name__}: {err}") from None
    method = _TRANSPOSE.get(orientation)
    return rgb.transpose(method) if method is not None else rgb


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of a decoded image: transparency on white, 16-bit scaled, anything else converted."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        image = Image.fromarray(values.astype(np.uint8), "L")
    transparent = image.mode in _ALPHA_MODES or "transparency" in image.info
    if not transparent:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND), rgba).convert("RGB")
