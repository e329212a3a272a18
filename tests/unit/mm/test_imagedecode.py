"""The one image decoder: transparency on white, EXIF orientation, first frame, 16-bit scaling, the limit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlrun.runtime.imagedecode import ImageRejected, decode_rgb, probe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from image_modes import animated, exif_rotated, palette_with_transparency, rgba, sixteen_bit


def test_transparency_is_composited_on_white_and_exif_and_frames_are_applied() -> None:
    assert decode_rgb(rgba()).getpixel((0, 0)) == (255, 255, 255)  # transparent black shows as white
    assert decode_rgb(palette_with_transparency()).getpixel((0, 0)) == (255, 255, 255)
    assert decode_rgb(exif_rotated()).size == (24, 64) == probe(exif_rotated()).size
    assert decode_rgb(animated()).getpixel((47, 39)) != (0, 255, 0)  # the first frame, not the green one
    grey = decode_rgb(sixteen_bit())
    assert grey.getpixel((0, 0)) == (0, 0, 0) and grey.getpixel((47, 0)) == (255, 255, 255)  # scaled


def test_the_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    assert probe(rgba(), max_pixels=48 * 40).size == (48, 40)
    for check in (probe, decode_rgb):
        with pytest.raises(ImageRejected, match="48x40 = 1920 pixels exceeds the limit of 1919"):
            check(rgba(), max_pixels=1919)
    with pytest.raises(ImageRejected, match="empty"):
        probe(b"")
    with pytest.raises(ImageRejected, match="not an image"):
        decode_rgb(b"BM not a bitmap")
