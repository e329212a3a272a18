"""Images in every mode an environment may send (for the pixel parity and decoder tests)."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image


def _gradient(size: tuple[int, int] = (48, 40)) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (w + h - 2)], -1).astype(
        np.uint8
    )


def _save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def rgba() -> bytes:
    rgb = _gradient()
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[:, 24:] = 128  # left half fully transparent (black underneath), right half half-transparent
    rgb[:, :24] = 0
    return _save(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")


def la() -> bytes:
    grey = _gradient()[..., 0]
    alpha = np.tile(np.linspace(0, 255, grey.shape[1]).astype(np.uint8), (grey.shape[0], 1))
    return _save(Image.fromarray(np.dstack([grey, alpha]), "LA"), "PNG")


def palette_with_transparency() -> bytes:
    image = Image.fromarray(_gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _save(image, "PNG", transparency=int(np.asarray(image)[0, 0]))


def cmyk() -> bytes:
    return _save(Image.fromarray(_gradient()).convert("CMYK"), "JPEG", quality=95)


def sixteen_bit() -> bytes:
    values = np.tile(np.linspace(0, 65535, 48).astype(np.uint16), (40, 1))
    return _save(Image.frombytes("I;16", (48, 40), values.astype("<u2").tobytes()), "PNG")


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored 64x24 image is shown 24x64
    return _save(Image.fromarray(_gradient((64, 24))), "JPEG", quality=95, exif=exif.tobytes())


def animated() -> bytes:
    frames = [Image.fromarray(_gradient()), Image.new("RGB", (48, 40), (0, 255, 0))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def rgb() -> bytes:
    return _save(Image.fromarray(_gradient()), "PNG")


MODES: dict[str, tuple[Callable[[], bytes], str]] = {
    "RGBA": (rgba, ".png"),
    "LA": (la, ".png"),
    "P+transparency": (palette_with_transparency, ".png"),
    "CMYK": (cmyk, ".jpg"),
    "16-bit": (sixteen_bit, ".png"),
    "EXIF-rotated": (exif_rotated, ".jpg"),
    "animated": (animated, ".gif"),
    "RGB": (rgb, ".png"),
}
