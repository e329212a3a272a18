"""Image re-inlining: media types, the size cap, missing files, the asset-root fence, no mutation."""

from __future__ import annotations

import base64
import copy
import logging
import struct
import zlib
from pathlib import Path

import pytest
from upload_helpers import JPEG, PNG, image_part, rollout

from rlrun.runtime.upload.inline import NOT_INLINED_KEY, inline_local_images

CAP = 2 * 1024 * 1024


def _url(obj: dict) -> str:
    return obj["prompt"][0]["content"][0]["image_url"]["url"]


def _part(obj: dict) -> dict:
    return obj["prompt"][0]["content"][0]["image_url"]


@pytest.mark.parametrize(
    ("name", "data", "media"), [("a.png", PNG, "image/png"), ("b.jpg", JPEG, "image/jpeg")]
)
def test_inlines_with_media_type(asset_root: Path, name: str, data: bytes, media: str) -> None:
    path = asset_root / "run_t" / "assets" / "images" / name
    path.write_bytes(data)
    out = inline_local_images(rollout("e1", [path]), asset_root, CAP)
    assert _url(out) == f"data:{media};base64,{base64.b64encode(data).decode()}"


def test_input_is_never_mutated(asset_root: Path) -> None:
    img = asset_root / "run_t" / "assets" / "images" / "a.png"
    img.write_bytes(PNG)
    src = rollout("e1", [img], completion=[{"role": "assistant", "content": [image_part(img)]}])
    before = copy.deepcopy(src)
    out = inline_local_images(src, asset_root, CAP)
    assert src == before
    assert out["completion"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_cap_is_inclusive_and_larger_stays_marked_reference(asset_root: Path) -> None:
    images = asset_root / "run_t" / "assets" / "images"
    (images / "at_cap.png").write_bytes(PNG + b"\x00" * (CAP - len(PNG)))
    (images / "over_cap.png").write_bytes(PNG + b"\x00" * (CAP + 1 - len(PNG)))
    src = rollout("e1", [images / "at_cap.png", images / "over_cap.png"])
    out = inline_local_images(src, asset_root, CAP)
    at_cap, over_cap = (part["image_url"] for part in out["prompt"][0]["content"][:2])
    assert at_cap["url"].startswith("data:image/png;base64,") and NOT_INLINED_KEY not in at_cap
    assert over_cap["url"] == (images / "over_cap.png").as_uri()
    assert over_cap[NOT_INLINED_KEY] == f"{CAP + 1} bytes > cap {CAP}"


def test_missing_file_is_skipped_with_warning(asset_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = asset_root / "run_t" / "assets" / "images" / "swept.png"
    with caplog.at_level(logging.WARNING):
        out = inline_local_images(rollout("e1", [gone]), asset_root, CAP)
    assert _url(out) == gone.as_uri()
    assert _part(out)[NOT_INLINED_KEY] == "missing"
    assert "swept.png" in caplog.text


@pytest.mark.parametrize("escape", ["outside", "dotdot", "percent-dotdot", "symlink", "dir-symlink"])
def test_files_outside_asset_root_are_never_read(asset_root: Path, tmp_path: Path, escape: str) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    if escape == "outside":
        url = secret.as_uri()
    elif escape == "dotdot":
        url = f"file://{asset_root}/run_t/../../secret.png"
    elif escape == "percent-dotdot":
        url = f"file://{asset_root}/run_t/%2e%2e/%2E%2E/secret.png"
    elif escape == "dir-symlink":
        (asset_root / "run_t" / "assets" / "images" / "sub").symlink_to(tmp_path, target_is_directory=True)
        url = (asset_root / "run_t" / "assets" / "images" / "sub" / "secret.png").as_uri()
    else:
        link = asset_root / "run_t" / "assets" / "images" / "link.png"
        link.symlink_to(secret)
        url = link.as_uri()
    src = {"prompt": [{"type": "image_url", "image_url": {"url": url}}]}
    out = inline_local_images(src, asset_root, CAP)
    assert out["prompt"][0]["image_url"] == {"url": url, NOT_INLINED_KEY: "outside asset root"}


def test_percent_encoded_paths_round_trip(asset_root: Path) -> None:
    img = asset_root / "run_t" / "assets" / "images" / "a b%20c.png"
    img.write_bytes(PNG)
    assert "%2520" in img.as_uri()
    assert _url(inline_local_images(rollout("e1", [img]), asset_root, CAP)).startswith("data:image/png")


def test_other_schemes_and_non_images_are_left_alone(asset_root: Path) -> None:
    text_file = asset_root / "run_t" / "notes.txt"
    text_file.write_text("hi")
    parts = [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    out = inline_local_images({"prompt": parts}, asset_root, CAP)
    assert out == {"prompt": parts}
    other_host = inline_local_images({"image_url": {"url": "file://otherhost/a.png"}}, asset_root, CAP)
    assert other_host["image_url"][NOT_INLINED_KEY] == "not a local file URL"
    txt = inline_local_images({"image_url": {"url": text_file.as_uri()}}, asset_root, CAP)
    assert txt["image_url"]["url"] == text_file.as_uri()
    assert txt["image_url"][NOT_INLINED_KEY].startswith("not an image")


def test_each_file_is_read_once_per_cache(asset_root: Path) -> None:
    img = asset_root / "run_t" / "assets" / "images" / "a.png"
    img.write_bytes(PNG)
    cache: dict = {}
    first = inline_local_images(rollout("e1", [img, img]), asset_root, CAP, cache)
    assert list(cache) == [img.as_uri()]
    img.unlink()  # a second read would now miss: the cached value proves no re-read happened
    second = inline_local_images(rollout("e2", [img]), asset_root, CAP, cache)
    assert _url(second) == _url(first) == first["prompt"][0]["content"][1]["image_url"]["url"]


def test_inlining_checks_the_format_not_the_pixel_limit(asset_root: Path) -> None:
    """The pixel limit is enforced where images are decoded (offload, inference, trainer); the logger only
    copies bytes, so an image the run accepted under a raised `maxImagePixels` is still inlined."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 9_000, 9_000, 8, 2, 0, 0, 0))
    big = asset_root / "run_t" / "assets" / "images" / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b""))  # 81 Mpx > the 67 Mpx default
    assert _url(inline_local_images(rollout("e1", [big]), asset_root, CAP)).startswith(
        "data:image/png;base64,"
    )
